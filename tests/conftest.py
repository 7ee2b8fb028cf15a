"""Shared fixtures: an isolated DL_HOME per test, the CLI runner, and helpers for real runs."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "trainjobs" / "mnist"
# Small but real training: two epochs of a few batches on scikit-learn's digits.
TINY = ["--set", "max_epochs=2", "--set", "limit_train_batches=4", "--set", "limit_val_batches=2"]


@pytest.fixture
def dl_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dl-home"
    monkeypatch.setenv("DL_HOME", str(home))
    monkeypatch.delenv("DL_TARGET", raising=False)
    monkeypatch.delenv("DL_DEBUG", raising=False)
    return home


def invoke(*args: str):
    """Run `dl ARGS` in-process; returns click's Result (stdout, stderr, exit_code)."""
    from orchestrator.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def launched_id(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("Launched "):
            return line.split()[1]
    raise AssertionError(f"no 'Launched' line in:\n{output}")


def wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def load_job_module(path: Path, name: str):
    """Import a job's module by file path under a unique name (jobs all have model.py/data.py)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def runs_json() -> list[dict]:
    result = invoke("runs", "--json", "--limit", "0")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def broken_job(tmp_path) -> Path:
    """A copy of the mnist job whose training_step divides by zero: a deliberate bug."""
    job = tmp_path / "jobs" / "broken"
    shutil.copytree(MNIST, job, ignore=shutil.ignore_patterns("__pycache__"))
    source = (job / "model.py").read_text()
    marker = "def training_step(self, batch, batch_idx):"
    assert marker in source, "the mnist model changed shape; update this fixture"
    (job / "model.py").write_text(source.replace(marker, marker + "\n        1 / 0", 1))
    return job
