"""Bad input gets one line saying what is wrong and what to do, a non-zero exit, no
traceback, and nothing already in the store is lost or altered."""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from orchestrator.store import Run, RunStatus, Store
from tests.conftest import REPO, invoke, runs_json


@pytest.fixture
def stored_run(dl_home, tmp_path) -> Run:
    """A finished run put straight into the store, whose best checkpoint is corrupt."""
    checkpoints = tmp_path / "ckpts"
    model = tmp_path / "model"
    checkpoints.mkdir()
    model.mkdir()
    (checkpoints / "best.ckpt").write_bytes(b"PK\x03\x04 this is not a finished zip archive")
    with zipfile.ZipFile(model / "model.ckpt", "w") as archive:
        archive.writestr("archive/data.pkl", b"weights")
    run = Run(
        id="mnist-20261125-0000-abcd", job="mnist", target="local", status=RunStatus.COMPLETED,
        params={"lr": 0.002}, metrics={"val_acc": 0.98}, created_at=time.time() - 60,
        started_at=time.time() - 50, ended_at=time.time() - 10, checkpoint_uri=str(checkpoints),
        model_uri=str(model),
    )  # fmt: skip
    Store(dl_home).insert(run)
    return run


def _one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


CASES = [
    (["launch", "mnsit"], 2, ["Unknown job 'mnsit'", "Did you mean 'mnist'?", "dl jobs"]),
    (["launch", "mnist", "--set", "lrr=0.1"], 2, ["Unknown parameter 'lrr'", "Did you mean 'lr'?"]),
    (["launch", "mnist", "--set", "batch_size=big"], 2, ["batch_size expects an integer", "'big'"]),
    (["launch", "mnist", "--set", "dropout=1.5"], 2, ["dropout must be <= 1.0"]),
    (["launch", "mnist", "--set", "precision=64"], 2, ["precision must be one of"]),
    (["launch", "mnist", "--set", "lr"], 2, ["is not KEY=VALUE", "--set lr=0.01"]),
    (["launch", "mnist", "--data", "train=/no/such/folder"], 2, ["does not exist: /no/such/folder"]),
    (["launch", "mnist", "--data", "train=s3://bucket/mnist"], 2, ["local folders only"]),
    (["launch", "mnist", "--data", "tr ain=/tmp"], 2, ["Bad channel name"]),
    (["launch", "mnist", "--data", "train="], 2, ["--data train= has no path", "--data train=./folder"]),
    (["launch", "mnist", "--name", "bad_name!"], 2, ["not a valid SageMaker job name"]),
    (["launch", "mnist", "--name", "mnist-20261125-0000-abcd"], 2, ["already exists"]),
    (["launch", "mnist", "--target", "mars"], 2, ["Unknown target 'mars'"]),
    (["launch", "mnist", "--follow", "--detach"], 2, ["exclude each other"]),
    (["show", "mnist-20261125-0000-abcx"], 2, ["No run 'mnist-20261125-0000-abcx'", "dl runs"]),
    (["show", "abcd"], 2, ["Did you mean mnist-20261125-0000-abcd?"]),
    (["logs", "nope"], 2, ["No run 'nope'"]),
    (["stop", "nope"], 2, ["No run 'nope'"]),
    (["pull", "nope"], 2, ["No run 'nope'"]),
    (["pull", "mnist-20261125-0000-abcd", "--last", "--all"], 2, ["exclude each other"]),
    (["pull", "mnist-20261125-0000-abcd", "--to", "/"], 2, ["--to / is the root of the file system", "--to ./RUN"]),
    (["pull", "mnist-20261125-0000-abcd", "--to", "/proc/self"], 2, ["--to /proc/self is a system folder"]),
    (["runs", "--status", "Finished"], 2, ["Unknown status 'Finished'", "Completed"]),
    (["jobs", "nosuchjob"], 2, ["Unknown job 'nosuchjob'"]),
]


# --name is checked once the local backend has found torch and Lightning (they are what it runs).
NEED_TRAIN = {"launch mnist --name bad_name!", "launch mnist --name mnist-20261125-0000-abcd"}
PARAMS = [
    pytest.param(*case, id=name, marks=pytest.mark.train if name in NEED_TRAIN else ())
    for case, name in ((c, " ".join(c[0])) for c in CASES)
]


@pytest.mark.parametrize(("args", "code", "expected"), PARAMS)
def test_bad_input_is_one_line_and_changes_nothing(stored_run, args, code, expected):
    before = runs_json()
    line = _one_line_error(invoke(*args), code)
    for text in expected:
        assert text in line
    assert runs_json() == before


def test_a_corrupt_checkpoint_is_named_and_nothing_at_the_destination_is_clobbered(stored_run, tmp_path):
    dest = tmp_path / "pulled"
    (dest / "checkpoints").mkdir(parents=True)
    (dest / "checkpoints" / "best.ckpt").write_bytes(b"an earlier good pull")
    line = _one_line_error(invoke("pull", stored_run.id, "--to", str(dest)), code=1)
    assert f"Checkpoint best.ckpt of run {stored_run.id} is corrupt" in line
    assert (dest / "checkpoints" / "best.ckpt").read_bytes() == b"an earlier good pull"
    assert not list(dest.rglob("*.pulling"))


def test_an_unwritable_dl_home_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DL_HOME", str(blocker / "home"))
    line = _one_line_error(invoke("runs"), code=1)
    assert "is not writable" in line and "Set DL_HOME" in line


def test_a_corrupt_database_is_reported_and_left_untouched(dl_home):
    dl_home.mkdir(parents=True)
    garbage = b"this is not sqlite" * 100
    (dl_home / "dl.db").write_bytes(garbage)
    line = _one_line_error(invoke("runs"), code=1)
    assert "cannot be opened" in line
    assert (dl_home / "dl.db").read_bytes() == garbage


def test_debug_shows_the_traceback(dl_home):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["--debug", "show", "nope"], catch_exceptions=False)
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "RunNotFound" in result.stderr


def test_run_json_is_the_documented_shape(stored_run):
    [run] = runs_json()
    for key in ("id", "job", "target", "status", "params", "metrics", "logs", "checkpoints", "model"):
        assert key in run
    assert json.loads(invoke("show", stored_run.id, "--json").stdout)["metrics"] == {"val_acc": 0.98}
    assert Path(run["checkpoints"]).name == "ckpts"


def test_pull_to_a_file_is_one_line_and_leaves_the_file(stored_run, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    line = _one_line_error(invoke("pull", stored_run.id, "--to", str(target)))
    assert f"--to {target} is a file, not a folder." in line
    assert target.read_text() == "mine"


def test_a_symlink_loop_in_data_is_one_line(stored_run, tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop")
    line = _one_line_error(invoke("launch", "mnist", "--data", f"train={loop}"))
    assert f"--data train={loop} cannot be followed (a symlink loop)" in line


def _dl(*args: str, limit: int) -> subprocess.CompletedProcess:
    """`dl ARGS` in its own process under a file-size limit of ``limit`` bytes: writes past it fail
    as on a full disk (EFBIG; SQLite reports it as a failed or full write)."""

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    dl = Path(sys.executable).parent / "dl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([str(dl), *args], capture_output=True, text=True, env=env, preexec_fn=limited, timeout=120)


def test_a_full_disk_on_a_local_pull_is_one_line_and_leaves_no_part(stored_run, tmp_path):
    model = Path(stored_run.model_uri) / "model.ckpt"
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr("archive/data/0", random.Random(1).randbytes(2 * 1024 * 1024))
    dest = tmp_path / "pulled"

    result = _dl("pull", stored_run.id, "--to", str(dest), limit=1024 * 1024)

    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: Cannot write {dest / 'model' / '.model.ckpt.dlpart'} (File too large).")
    assert "Free some disk space, or pull --to elsewhere." in line
    assert list((dest / "model").iterdir()) == []


def test_a_full_disk_on_launch_is_one_line_and_records_nothing(stored_run):
    from orchestrator import api

    api.plan("mnist", target="local")  # the package is cached: the launch's first write is the run's row
    before = runs_json()

    result = _dl("launch", "mnist", "--local", limit=1)

    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: Cannot write the run database") and "the disk holding it is full" in line, line
    assert "Free some space there" in line
    assert runs_json() == before


def test_a_finished_run_whose_files_were_deleted_says_they_are_gone(dl_home, tmp_path):
    folder = tmp_path / "runs" / "mnist-20261125-0100-beef"
    run = Run(
        id=folder.name, job="mnist", target="local", status=RunStatus.COMPLETED, created_at=time.time() - 60,
        ended_at=time.time() - 10, log_uri=str(folder / "output" / "train.log"),
        checkpoint_uri=str(folder / "checkpoints"), model_uri=str(folder / "model"),
    )  # fmt: skip
    Store(dl_home).insert(run)  # the run folder itself was deleted after the run

    logs = _one_line_error(invoke("logs", run.id), code=1)
    pull = _one_line_error(invoke("pull", run.id, "--to", str(tmp_path / "pulled")), code=1)

    assert f"Run {run.id} ended (Completed), but its log is gone from {folder / 'output' / 'train.log'}." in logs
    assert "may still be starting" not in logs
    assert f"its checkpoints and model are gone from {folder / 'checkpoints'} and {folder / 'model'}." in pull
    assert "yet" not in pull
