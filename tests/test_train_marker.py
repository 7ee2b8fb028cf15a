"""The `train` marker is enforced (tests/conftest.py): a test without it cannot import what the
train extra brings, here or in a Python it starts, so a missing marker fails in every venv."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


def test_an_unmarked_test_cannot_import_torch_here_or_in_a_child():
    with pytest.raises(ModuleNotFoundError, match="imports torch but is not marked train"):
        import torch  # noqa: F401
    out = subprocess.run([sys.executable, "-c", "import lightning"], capture_output=True, text=True)
    assert out.returncode == 1 and "imports lightning but is not marked train" in out.stderr, out.stderr
    assert "torch" not in sys.modules and "lightning" not in sys.modules


def test_an_unmarked_test_names_itself_in_the_refusal():
    with pytest.raises(ModuleNotFoundError) as info:
        import sklearn.datasets  # noqa: F401
    assert "test_an_unmarked_test_names_itself_in_the_refusal imports sklearn" in str(info.value)


@pytest.mark.train
def test_a_marked_test_imports_torch():
    import torch

    assert torch.tensor([2, 3]).sum().item() == 5
    assert importlib.util.find_spec("lightning") is not None
