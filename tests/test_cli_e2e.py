"""End to end through the CLI: real training on small data, real files, real SQLite."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MNIST, TINY, invoke, launched_id, load_job_module, runs_json, wait_for


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One real run, launched with --follow, shared by the read-only tests below."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DL_HOME", str(home))
        result = invoke("launch", "mnist", "--local", "--follow", *TINY)
        run_id = launched_id(result.stdout)
        yield {"home": home, "id": run_id, "result": result}


@pytest.fixture
def in_finished_home(finished, monkeypatch):
    monkeypatch.setenv("DL_HOME", str(finished["home"]))
    return finished


@pytest.mark.train
def test_follow_streams_the_log_and_exits_with_the_outcome(finished):
    result = finished["result"]
    assert result.exit_code == 0, result.output
    assert "epoch 1/2" in result.stdout and "epoch 2/2" in result.stdout
    assert f"{finished['id']} Completed" in result.stdout


@pytest.mark.train
def test_runs_and_show_json_describe_the_run(in_finished_home):
    run_id = in_finished_home["id"]
    [listed] = [r for r in runs_json() if r["id"] == run_id]
    shown = json.loads(invoke("show", run_id, "--json").stdout)
    for run in (listed, shown):
        assert run["job"] == "mnist" and run["target"] == "local" and run["status"] == "Completed"
        assert run["params"]["max_epochs"] == 2 and run["params"]["lr"] == 0.002
        assert 0.0 <= run["metrics"]["val_acc"] <= 1.0 and "train_loss" in run["metrics"]
        assert Path(run["logs"]).is_file()
        assert (Path(run["checkpoints"]) / "last.ckpt").is_file()
        assert (Path(run["model"]) / "model.ckpt").is_file()
        assert run["duration_s"] > 0 and run["created_at"].endswith("Z")
    package = in_finished_home["home"] / "packages" / f"{shown['package_hash']}.tar.gz"
    assert hashlib.sha256(package.read_bytes()).hexdigest() == shown["package_hash"]


@pytest.mark.train
def test_show_text_and_logs(in_finished_home):
    run_id = in_finished_home["id"]
    shown = invoke("show", run_id)
    assert shown.exit_code == 0
    assert "Completed" in shown.stdout and "val_acc" in shown.stdout and "max_epochs" in shown.stdout
    assert "Best      val_acc=" in shown.stdout  # the monitored metric's best epoch
    best = json.loads(invoke("show", run_id, "--json").stdout)["best"]
    assert best["metric"] == "val_acc" and best["epoch"] in (0, 1) and 0.0 <= best["value"] <= 1.0
    logs = invoke("logs", run_id)
    assert logs.exit_code == 0
    assert "data: scikit-learn digits" in logs.stdout and "epoch 2/2" in logs.stdout
    assert f"dl: run {run_id} Completed" in logs.stdout


@pytest.mark.train
def test_run_folder_follows_the_sagemaker_layout(in_finished_home):
    base = in_finished_home["home"] / "runs" / in_finished_home["id"]
    hps = json.loads((base / "input/config/hyperparameters.json").read_text())
    assert hps["sagemaker_program"] == '"dl_entry.py"'
    assert hps["lr"] == "0.002" and hps["precision"] == '"32-true"' and hps["fast_dev_run"] == "false"
    resources = json.loads((base / "input/config/resourceconfig.json").read_text())
    assert resources["current_host"] == "algo-1" and resources["hosts"] == ["algo-1"]
    assert json.loads((base / "input/config/inputdataconfig.json").read_text()) == {}
    assert (base / "code" / "dl_entry.py").is_file() and (base / "code" / "model.py").is_file()
    rows = (base / "output/data/metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,") and len(rows) == 3
    assert not (base / "output" / "failure").exists()


@pytest.mark.train
def test_pull_brings_back_checkpoints_that_load(in_finished_home, tmp_path):
    import torch

    model_module = load_job_module(MNIST / "model.py", "dl_e2e_mnist_model")
    dest = tmp_path / "pulled"
    result = invoke("pull", in_finished_home["id"], "--to", str(dest))
    assert result.exit_code == 0, result.output
    assert (dest / "model" / "model.ckpt").is_file() and (dest / "checkpoints" / "best.ckpt").is_file()
    assert not (dest / "checkpoints" / "last.ckpt").exists()
    images = torch.zeros(3, 1, 8, 8)
    for path in (dest / "checkpoints" / "best.ckpt", dest / "model" / "model.ckpt"):
        model = model_module.DigitCNN.load_from_checkpoint(path, map_location="cpu").eval()
        assert model.hparams.lr == 0.002
        assert model(images).shape == (3, 10)

    unchanged = invoke("pull", in_finished_home["id"], "--to", str(dest))
    assert unchanged.exit_code == 0 and "Pulled 0 files" in unchanged.stdout
    assert "3 already here and unchanged" in unchanged.stdout  # model.ckpt, dl_model.json, best.ckpt

    listed = invoke("pull", in_finished_home["id"], "--to", str(tmp_path / "nowhere"), "--all", "--dry-run")
    assert listed.exit_code == 0 and "last.ckpt" in listed.stdout and "Would pull" in listed.stdout
    assert not (tmp_path / "nowhere").exists()

    again = invoke("pull", in_finished_home["id"], "--to", str(dest), "--all")
    assert again.exit_code == 0
    names = {p.name for p in dest.rglob("*") if p.is_file()}
    assert {"best.ckpt", "last.ckpt", "model.ckpt", "metrics.csv", "summary.json"} <= names
    assert not [n for n in names if n.endswith(".dlpart")]


@pytest.mark.train
def test_detached_launch_returns_at_once_and_the_run_completes(dl_home):
    from orchestrator import api

    dl = Path(sys.executable).parent / "dl"
    out = subprocess.run([str(dl), "launch", "mnist", *TINY, "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    launched = json.loads(out.stdout)
    assert launched["status"] in ("Pending", "InProgress")  # returned before training ended
    assert launched["id"].startswith("mnist-")
    run = api.wait(launched["id"], timeout=120)
    assert run.status.value == "Completed", run.failure_reason
    assert run.metrics["val_acc"] > 0


@pytest.mark.train
def test_dry_run_plans_and_smoke_tests_without_starting_anything(dl_home):
    result = invoke("launch", "mnist", "--dry-run", "--set", "lr=0.01")
    assert result.exit_code == 0, result.output
    assert "Nothing will be started" in result.stdout
    assert "dl_entry.py" in result.stdout and "lr                   0.01" in result.stdout
    assert "Smoke test passed" in result.stdout
    assert runs_json() == []


@pytest.mark.train
def test_dry_run_fails_fast_with_the_jobs_own_error(dl_home, broken_job):
    result = invoke("launch", str(broken_job), "--dry-run")
    assert result.exit_code == 1
    assert "Smoke test failed: ZeroDivisionError: division by zero (model.py:" in result.stderr
    assert "training_step" in result.stderr
    assert runs_json() == []


@pytest.mark.train
def test_dry_run_json_with_an_idx_channel(dl_home, tmp_path):
    import numpy as np

    idx = tmp_path / "idx"
    idx.mkdir()
    rng = np.random.default_rng(0)
    _write_idx(idx / "train-images-idx3-ubyte", rng.integers(0, 256, (64, 28, 28), dtype=np.uint8))
    _write_idx(idx / "train-labels-idx1-ubyte", rng.integers(0, 10, 64, dtype=np.uint8))
    result = invoke("launch", "mnist", "--dry-run", "--json", "--data", f"train={idx}")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["data"] == {"train": str(idx)}
    assert plan["smoke_test"]["ok"] is True
    assert "dl_entry.py" in [f["name"] for f in plan["package"]["files"]]


def _write_idx(path: Path, array) -> None:
    import struct

    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def _log_has(run_id: str, text: str):
    from orchestrator import api

    run = api.show(run_id)
    return run.log_uri and Path(run.log_uri).is_file() and text in Path(run.log_uri).read_text()


@pytest.mark.train
def test_stop_saves_a_checkpoint_and_ends_stopped(dl_home):
    import torch

    launched = invoke("launch", "mnist", "--set", "max_epochs=100000")
    run_id = launched_id(launched.stdout)
    wait_for(lambda: _log_has(run_id, "epoch 2/"), what="two epochs")
    stopped = invoke("stop", run_id, "--grace", "60")
    assert stopped.exit_code == 0, stopped.output
    assert f"{run_id} Stopped" in stopped.stdout
    run = json.loads(invoke("show", run_id, "--json").stdout)
    assert run["status"] == "Stopped" and run["failure_reason"] is None
    last = Path(run["checkpoints"]) / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] > 0
    assert "dl: stop requested; saved last.ckpt" in Path(run["logs"]).read_text()
    again = invoke("stop", run_id)
    assert again.exit_code == 0 and "already ended (Stopped)" in again.stdout


@pytest.mark.train
def test_a_killed_run_is_reported_failed_not_left_running(dl_home):
    launched = invoke("launch", "mnist", "--set", "max_epochs=100000")
    run_id = launched_id(launched.stdout)
    wait_for(lambda: _log_has(run_id, "epoch 1/"), what="one epoch")
    from orchestrator import api

    os.killpg(api.show(run_id).backend_state["pid"], signal.SIGKILL)
    run = wait_for(lambda: (r := api.show(run_id)).status.is_terminal and r, what="the run to be noticed dead")
    assert run.status.value == "Failed"
    assert "ended without recording an outcome" in run.failure_reason


def test_cli_start_up_imports_no_heavy_library(dl_home):
    from orchestrator.store import Run, RunStatus, open_store

    invoke("runs")  # creates the store
    open_store().insert(Run(id="mnist-shown", job="mnist", target="local", status=RunStatus.COMPLETED, created_at=1.0))
    probe = (
        "import sys\nsys.argv = ['dl'] + sys.argv[1:]\nfrom orchestrator.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'lightning', 'pytorch_lightning', 'boto3', 'botocore', 'sagemaker', 'numpy',"
        " 'matplotlib', 'tomlkit') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    for args in (["--help"], ["runs"], ["runs", "--json"], ["jobs"], ["show", "nope"], ["show", "mnist-shown"]):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
        assert "HEAVY []" in out.stderr, (args, out.stderr)
