"""Script mode: a user's own training script, unchanged, through the container contract.

The projects under tests/scripts/ are written as the Lightning docs teach (a plain Trainer with
argparse, a LightningCLI script) and one script without Lightning; each has its requirements.txt.
Real training on tiny data (a few batches, 2 epochs), real run folders, the real store."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.conftest import invoke, launched_id, wait_for

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture
def project(tmp_path):
    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(SCRIPTS / name, dest)
        return dest

    return copy


def _run(run_id: str) -> dict:
    return json.loads(invoke("show", run_id, "--json").stdout)


def _log(run_id: str) -> str:
    path = _run(run_id)["logs"]
    return Path(path).read_text() if path and Path(path).is_file() else ""


def _rows(run: dict) -> list[dict]:
    with open(Path(run["output"]) / "data" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _step(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def _kill_leftovers(run_id: str) -> None:
    """Whatever the test left running of this run (its supervisor's process group) is killed."""
    from orchestrator import api

    pgid = api.show(run_id).backend_state.get("pgid")
    if pgid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.train
def test_a_plain_trainer_script_trains_with_checkpoints_metrics_and_model(dl_home, project):
    folder = project("plain")
    result = invoke("launch", str(folder / "train.py"), "--local", "--follow", "--set", "lr=0.1", "--", "--epochs", "2")
    assert result.exit_code == 0, result.output
    run_id = launched_id(result.stdout)
    run = _run(run_id)
    assert run["status"] == "Completed"
    log = _log(run_id)
    assert "script sees lr=0.1 epochs=2" in log  # `--` words verbatim, --set as --lr 0.1
    assert "dl: Lightning script (lightning.pytorch); applied: " in log
    assert "last.ckpt every epoch in" in log and "SIGTERM saves last.ckpt" in log
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1] and all(r["val_loss"] for r in rows)
    assert "val_loss" in run["metrics"]
    checkpoint = Path(run["checkpoints"]) / "last.ckpt"
    assert _step(checkpoint) == 16  # 64 samples, batches of 8, 2 epochs
    assert (Path(run["model"]) / "model.ckpt").is_file()
    listed = invoke("runs", "--sort", "val_loss", "--json")
    assert run_id in listed.stdout
    code = Path(run["checkpoints"]).parent / "code"
    assert "# torch  (left out by dl" in (code / "requirements.txt").read_text()


@pytest.mark.train
def test_a_lightningcli_script_takes_subcommand_config_and_set(dl_home, project):
    folder = project("cli")
    args = ["--", "fit", "--config", "config.yaml", "--model.hidden", "4"]
    result = invoke("launch", str(folder / "main.py"), "--local", "--follow", "--set", "model.lr=0.02", *args)
    assert result.exit_code == 0, result.output
    run = _run(launched_id(result.stdout))
    assert run["status"] == "Completed"
    assert "cli sees lr=0.02 hidden=4" in _log(run["id"])
    assert [int(r["epoch"]) for r in _rows(run)] == [0, 1]
    assert (Path(run["checkpoints"]) / "last.ckpt").is_file()
    assert (Path(run["model"]) / "model.ckpt").is_file()


@pytest.mark.train
def test_kill_9_then_resume_continues_the_step_count(dl_home, project):
    folder = project("plain")
    run_id = launched_id(invoke("launch", str(folder / "train.py"), "--local", "--", "--epochs", "400").stdout)
    try:
        checkpoint = Path(wait_for(lambda: _run(run_id)["checkpoints"], what="the run folder")) / "last.ckpt"
        wait_for(lambda: "epoch 3/400" in _log(run_id), what="three epochs")
        saved = _step(checkpoint)
        assert saved >= 24
        from orchestrator import api

        os.killpg(api.show(run_id).backend_state["pid"], signal.SIGKILL)
        assert wait_for(lambda: (r := _run(run_id))["terminal"] and r, what="the kill")["status"] == "Failed"
        assert invoke("resume", run_id).exit_code == 0
        wait_for(lambda: f"dl: resuming from {checkpoint}" in _log(run_id), what="the resume")
        wait_for(lambda: _step(checkpoint) > saved, what="training past the checkpoint")
        stopped = invoke("stop", run_id)
        assert stopped.exit_code == 0, stopped.output
        assert _run(run_id)["status"] == "Stopped"
        assert "dl: stop requested; saved last.ckpt" in _log(run_id)
        rows = _rows(_run(run_id))
        assert int(rows[0]["step"]) == 8 and int(rows[-1]["step"]) == 8 * len(rows)  # one count, not restarted
    finally:
        _kill_leftovers(run_id)


@pytest.mark.train
def test_a_script_without_lightning_runs_with_the_contract(dl_home, project):
    folder = project("raw")
    result = invoke("launch", str(folder / "train.py"), "--local", "--follow", "--", "--note", "x")
    assert result.exit_code == 0, result.output
    run = _run(launched_id(result.stdout))
    assert "imports no Lightning" in _log(run["id"]) and "checkpoints are its own" in _log(run["id"])
    assert "raw step 3 args ['--note', 'x']" in _log(run["id"])
    assert (Path(run["model"]) / "weights.txt").read_text() == "3"
    # Its checkpoint is a legacy (non-zip) torch.save: pulled as written, with a note, not "corrupt".
    (Path(run["checkpoints"]) / "last.ckpt").write_bytes((Path(run["checkpoints"]) / "state.pt").read_bytes())
    pulled = invoke("pull", run["id"], "--all", "--to", str(folder / "pulled"))
    assert pulled.exit_code == 0, pulled.output
    assert "state.pt is in the script's own format" in pulled.stdout and "corrupt" not in pulled.output
    for name in ("state.pt", "last.ckpt"):
        assert (folder / "pulled" / "checkpoints" / name).read_bytes() == (Path(run["checkpoints"]) / name).read_bytes()

    failed = invoke("launch", str(folder / "train.py"), "--local", "--follow", "--", "--fail")
    assert failed.exit_code == 1
    assert _run(launched_id(failed.stdout))["failure_reason"] == "raw: asked to fail"


@pytest.mark.train
def test_dry_run_smoke_tests_a_lightning_script(dl_home, project):
    folder = project("cli")
    result = invoke("launch", str(folder / "main.py"), "--local", "--dry-run", "--", "fit", "--config", "config.yaml")
    assert result.exit_code == 0, result.output
    assert "Smoke test passed" in result.stdout and "main.py" in result.stdout
    assert invoke("runs", "--json").stdout.strip() in ("[]", "")


@pytest.mark.train
def test_a_rejected_argument_fails_the_run_with_the_scripts_error_line(dl_home, project):
    folder = project("cli")
    result = invoke("launch", str(folder / "main.py"), "--local", "--follow", "--", "fit", "--model.nope", "1")
    assert result.exit_code == 1
    reason = _run(launched_id(result.stdout))["failure_reason"]
    assert "error" in reason.lower() and "nope" in reason and "\n" not in reason


def test_bad_scripts_are_one_line_each(dl_home, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.py").write_text("def f(:\n")
    cases = {
        str(tmp_path / "missing.py"): "There is no script",
        str(tmp_path / "notes.txt"): "is not a Python script",
        str(tmp_path / "broken.py"): "broken.py:1: SyntaxError",
    }
    for ref, message in cases.items():
        result = invoke("launch", ref, "--local", "--dry-run")
        assert result.exit_code != 0
        assert message in result.output and "Traceback" not in result.output, result.output
    extra = invoke("launch", "mnist", "--local", "--dry-run", "--", "fit")
    assert extra.exit_code != 0 and "are for scripts" in extra.output


def test_a_script_project_is_its_nearest_marked_folder(tmp_path):
    from orchestrator.scripts import load_script

    (tmp_path / "proj" / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "proj" / "pyproject.toml").write_text("[project]\nname='p'\n")
    script = tmp_path / "proj" / "src" / "pkg" / "train.py"
    script.write_text("import pytorch_lightning as pl\n")
    job = load_script(str(script))
    assert job.path == (tmp_path / "proj").resolve() and job.script == "src/pkg/train.py"
    assert job.lightning == "pytorch_lightning"
    assert load_script(str(script), root=str(tmp_path / "proj" / "src")).script == "pkg/train.py"


@pytest.mark.train
def test_a_sweep_of_a_lightningcli_script(dl_home, project):
    folder = project("cli")
    args = ["--set", "model.lr=0.1,0.02", "--local", "--wait", "--", "fit", "--config", "config.yaml"]
    result = invoke("sweep", str(folder / "main.py"), *args)
    assert result.exit_code == 0, result.output
    runs = [json.loads(invoke("show", line.split()[1], "--json").stdout)
            for line in result.stdout.splitlines() if line.startswith("Launched ")]  # fmt: skip
    assert [r["status"] for r in runs] == ["Completed", "Completed"]
    seen = sorted(line for r in runs for line in _log(r["id"]).splitlines() if line.startswith("cli sees"))
    assert seen == ["cli sees lr=0.02 hidden=8", "cli sees lr=0.1 hidden=8"]


@pytest.mark.train
def test_a_schedule_fires_a_script(dl_home, project):
    import time

    from orchestrator import scheduling
    from orchestrator.client import Client
    from orchestrator.store import open_store

    folder = project("raw")
    script = folder / "train.py"
    scheduling.create("raw-daily", str(script), expression="0 3 * * *", target="local", overrides={"note": "s"})
    store = open_store()
    schedule = store.get_schedule("raw-daily")
    assert schedule.spec["job_dir"] == str(script.resolve())  # found again by the script's path
    run = scheduling.fire(Client(), schedule, time.time())
    done = wait_for(lambda: (r := _run(run.id))["terminal"] and r, what="the scheduled run")
    assert done["status"] == "Completed" and "raw step 3 args ['--note', 's']" in _log(run.id)


@pytest.fixture
def moto(aws, moto_endpoint):
    class Clients:
        session = aws
        endpoint = moto_endpoint
        sm = aws.client("sagemaker", endpoint_url=moto_endpoint)

    return Clients


@pytest.mark.train
def test_a_script_as_a_played_sagemaker_job(moto, project, tmp_path):
    from tests.sagemaker_double import play_training_job

    folder = project("plain")
    result = invoke(
        "launch", str(folder / "train.py"), "--gpu", "T4", "--set", "lr=0.1", "--json", "--", "--epochs", "2"
    )
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["id"]
    job = moto.sm.describe_training_job(TrainingJobName=run_id)
    assert json.loads(job["HyperParameters"]["sagemaker_program"]) == "dl_script.py"
    # SageMaker's part: moto only records the job, so the test runs it (see sagemaker_double).
    played = play_training_job(moto.session, run_id, tmp_path / "container", endpoint_url=moto.endpoint)
    assert played.returncode == 0, played.output
    assert "script sees lr=0.1 epochs=2" in played.output and "epoch 2/2" in played.output
    state = _run(run_id)
    assert state["status"] == "Completed" and "val_loss" in state["metrics"]
    pulled = invoke("pull", run_id, "--last", "--to", str(tmp_path / "pulled"))
    assert pulled.exit_code == 0, pulled.output
    last = tmp_path / "pulled" / "checkpoints" / "last.ckpt"
    assert last.read_bytes() == (played.base / "checkpoints" / "last.ckpt").read_bytes()
