"""The `train` marker is enforced (tests/conftest.py): a test without it cannot import what the
train extra brings, here or in a Python it starts, so a missing marker fails in every venv."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


def refusal_or_absence(name: str, nodeid_part: str) -> str:
    """What importing ``name`` says in an unmarked test: the refusal naming the test where the train
    extra is installed, Python's own error where it is not (nothing to refuse then)."""
    if importlib.util.find_spec(name) is not None:
        return f"{nodeid_part} imports {name} but is not marked train"
    return f"No module named '{name}'"


def test_an_unmarked_test_cannot_import_torch_here_or_in_a_child():
    expected = refusal_or_absence("torch", "test_an_unmarked_test_cannot_import_torch_here_or_in_a_child")
    with pytest.raises(ModuleNotFoundError) as info:
        import torch  # noqa: F401
    assert expected in str(info.value)
    # A child Python finds the stand-ins first, in every venv.
    out = subprocess.run([sys.executable, "-c", "import lightning"], capture_output=True, text=True)
    assert out.returncode == 1 and "imports lightning but is not marked train" in out.stderr, out.stderr
    assert "torch" not in sys.modules and "lightning" not in sys.modules


def test_an_unmarked_test_names_itself_in_the_refusal():
    expected = refusal_or_absence("sklearn", "test_an_unmarked_test_names_itself_in_the_refusal")
    with pytest.raises(ModuleNotFoundError) as info:
        import sklearn.datasets  # noqa: F401
    assert expected in str(info.value)
    child = subprocess.run([sys.executable, "-c", "import sklearn"], capture_output=True, text=True)
    assert "test_an_unmarked_test_names_itself_in_the_refusal imports sklearn" in child.stderr, child.stderr


@pytest.mark.train
def test_a_marked_test_imports_torch():
    import torch

    assert torch.tensor([2, 3]).sum().item() == 5
    assert importlib.util.find_spec("lightning") is not None
