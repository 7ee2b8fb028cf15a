"""Checkpoints that survive: kill -9 and resume, a kill in the middle of writing a checkpoint,
warm starts from another run, and the checkpoint manifest. Real training on small data."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.conftest import MNIST, invoke, launched_id, wait_for

# Slower epochs (more, smaller batches) so that a kill lands inside one.
STEADY = ["--set", "max_epochs=6", "--set", "batch_size=16", "--set", "seed=7"]


def _run(run_id: str) -> dict:
    return json.loads(invoke("show", run_id, "--json").stdout)


def _log(run_id: str) -> str:
    path = _run(run_id)["logs"]
    return Path(path).read_text() if path and Path(path).is_file() else ""


def _metrics_rows(run: dict) -> list[dict]:
    with open(Path(run["output"]) / "data" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _step(checkpoint: Path) -> int:
    import torch

    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"])


@pytest.mark.train
def test_kill_9_mid_training_then_resume_continues_from_the_checkpoint(dl_home):
    baseline = launched_id(invoke("launch", "mnist", *STEADY, "--follow").stdout)
    reference = _run(baseline)
    assert reference["status"] == "Completed"
    steps_per_epoch = int(_metrics_rows(reference)[0]["step"])

    run_id = launched_id(invoke("launch", "mnist", *STEADY).stdout)
    wait_for(lambda: "epoch 3/6" in _log(run_id), what="three epochs")
    checkpoint = Path(_run(run_id)["checkpoints"]) / "last.ckpt"
    saved_step = _step(checkpoint)
    assert saved_step >= 3 * steps_per_epoch
    from orchestrator import api

    os.killpg(api.show(run_id).backend_state["pid"], signal.SIGKILL)  # supervisor and trainer, no warning
    killed = wait_for(lambda: (r := _run(run_id))["terminal"] and r, what="the kill to be noticed")
    assert killed["status"] == "Failed"

    resumed = invoke("resume", run_id, "--follow")
    assert resumed.exit_code == 0, resumed.output
    assert f"dl: resuming from {checkpoint}" in _log(run_id)
    final = _run(run_id)
    assert final["status"] == "Completed" and final["failure_reason"] is None
    assert _step(checkpoint) == 6 * steps_per_epoch  # continued from the checkpoint, not from zero
    rows = _metrics_rows(final)
    assert [int(r["epoch"]) for r in rows] == list(range(6))
    assert [int(r["step"]) for r in rows] == [steps_per_epoch * (e + 1) for e in range(6)]
    # Same seed; the resumed data order differs (RNG state is not part of a checkpoint), so allow 3 points.
    assert abs(final["metrics"]["val_acc"] - reference["metrics"]["val_acc"]) <= 0.03

    again = invoke("resume", run_id)
    assert again.exit_code == 0 and "already Completed; nothing to resume" in again.stdout


@pytest.fixture
def dies_while_saving(tmp_path) -> Path:
    """The mnist job with a fault injected at the save step: the third torch.save writes half a
    checkpoint and then the process SIGKILLs itself (once: a marker file keeps the resume alive)."""
    job = tmp_path / "jobs" / "fragile"
    shutil.copytree(MNIST, job, ignore=shutil.ignore_patterns("__pycache__"))
    fault = """

import io as _io
import os as _os
import signal as _signal

import torch as _torch

_real_save = _torch.save
_calls = {"n": 0}


def _save_then_die(obj, f, *args, **kwargs):
    _calls["n"] += 1
    marker = _os.path.join(_os.environ["DL_CHECKPOINT_DIR"], "fault-injected")
    if _calls["n"] == 3 and not _os.path.exists(marker) and hasattr(f, "write"):
        open(marker, "w").close()
        buffer = _io.BytesIO()
        _real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        _os.kill(_os.getpid(), _signal.SIGKILL)
    return _real_save(obj, f, *args, **kwargs)


_torch.save = _save_then_die
"""
    (job / "model.py").write_text((job / "model.py").read_text() + fault)
    return job


@pytest.mark.train
def test_a_kill_while_writing_a_checkpoint_leaves_the_previous_one_loadable(dl_home, dies_while_saving):
    import torch

    run_id = launched_id(invoke("launch", str(dies_while_saving), "--set", "max_epochs=3").stdout)
    run = wait_for(lambda: (r := _run(run_id))["terminal"] and r, what="the injected kill")
    assert run["status"] == "Failed" and "killed by signal 9" in run["failure_reason"]
    folder = Path(run["checkpoints"])
    partial = list(folder.glob(".*.tmp-*"))
    assert partial, "the fault should have left a half-written temporary file"
    # Saves 1 and 2 were epoch 1's best.ckpt and last.ckpt; save 3 (epoch 2's) died half-written.
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 0 and last["global_step"] > 0

    resumed = invoke("resume", run_id, "--follow")
    assert resumed.exit_code == 0, resumed.output
    assert _run(run_id)["status"] == "Completed"
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 2


@pytest.mark.train
def test_warm_start_from_another_runs_best_checkpoint(dl_home):
    source = launched_id(invoke("launch", "mnist", "--set", "max_epochs=4", "--follow").stdout)
    source_acc = _run(source)["metrics"]["val_acc"]

    warm = invoke(
        "launch", "mnist", "--from", f"{source}:best", "--from-optimizer", "--set", "max_epochs=1", "--follow"
    )
    assert warm.exit_code == 0, warm.output
    warm_id = launched_id(warm.stdout)
    log = _log(warm_id)
    assert "dl: warm start from best.ckpt" in log and "dl: optimizer state restored too" in log
    run = _run(warm_id)
    assert run["params"]["init_optimizer"] is True and "init" in run["data"]
    # One epoch from scratch lands near 0.93 (see the tour); from a trained model it starts high.
    assert run["metrics"]["val_acc"] >= source_acc - 0.02

    bad = invoke("launch", "mnist", "--from", f"{source}:worst")
    assert bad.exit_code == 2 and "after ':' comes best or last" in bad.stderr


@pytest.mark.train
def test_show_lists_the_checkpoint_manifest(dl_home):
    run_id = launched_id(invoke("launch", "mnist", "--set", "max_epochs=2", "--follow").stdout)
    shown = json.loads(invoke("show", run_id, "--json").stdout)
    entries = {e["file"]: e for e in shown["checkpoint_manifest"]}
    assert set(entries) == {"best.ckpt", "last.ckpt"}
    assert entries["last.ckpt"]["epoch"] == 1 and entries["last.ckpt"]["monitor"] == "val_acc"
    import hashlib

    folder = Path(shown["checkpoints"])
    for name, entry in entries.items():
        assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert entry["size"] == (folder / name).stat().st_size
    text = invoke("show", run_id).stdout
    assert "Checkpoints" in text and "last.ckpt" in text


def test_a_cloud_run_whose_checkpoints_stopped_syncing_gets_a_warning():
    import calendar
    import time

    from orchestrator.api import stale_checkpoint_warning
    from orchestrator.store import Run, RunStatus

    started = calendar.timegm(time.strptime("2026-11-25T10:00:00Z", "%Y-%m-%dT%H:%M:%SZ"))
    run = Run(id="r", job="mnist", target="sagemaker", status=RunStatus.IN_PROGRESS, started_at=started)
    # Three epochs in 30 minutes: one checkpoint every ~10 minutes.
    entries = [{"file": "last.ckpt", "epoch": 2, "written_at": "2026-11-25T10:30:00Z"}]
    fresh = started + 40 * 60
    late = started + 90 * 60
    assert stale_checkpoint_warning(run, entries, now=fresh) is None
    warning = stale_checkpoint_warning(run, entries, now=late)
    assert warning is not None and "60 minutes old" in warning and "stopped syncing" in warning
    finished = Run(id="r", job="mnist", target="sagemaker", status=RunStatus.COMPLETED, started_at=started)
    assert stale_checkpoint_warning(finished, entries, now=late) is None
    local = Run(id="r", job="mnist", target="local", status=RunStatus.IN_PROGRESS, started_at=started)
    assert stale_checkpoint_warning(local, entries, now=late) is None


@pytest.mark.train
def test_an_unreadable_last_checkpoint_is_named_set_aside_and_the_best_one_used(dl_home):
    run_id = launched_id(invoke("launch", "mnist", *STEADY).stdout)
    wait_for(lambda: "epoch 3/6" in _log(run_id), what="three epochs")
    from orchestrator import api

    os.killpg(api.show(run_id).backend_state["pid"], signal.SIGKILL)
    wait_for(lambda: _run(run_id)["terminal"], what="the kill to be noticed")
    folder = Path(_run(run_id)["checkpoints"])
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 torn by a crash")  # a checkpoint that does not load

    resumed = invoke("resume", run_id, "--follow")
    assert resumed.exit_code == 0, resumed.output
    log = _log(run_id)
    assert f"dl: checkpoint {folder / 'last.ckpt'} does not load" in log
    assert f"dl: resuming from {folder / 'best.ckpt'}" in log
    aside = list(folder.glob("last.ckpt.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"PK\x03\x04 torn by a crash"  # kept, not deleted
    assert _run(run_id)["status"] == "Completed"
    assert _step(folder / "last.ckpt") > 0


@pytest.mark.train
def test_warm_starts_cross_targets(aws, moto_endpoint, tmp_path):
    """A local run's checkpoint seeds a SageMaker run (uploaded under its hash), and a SageMaker
    run's checkpoint seeds a local one (fetched from S3). moto only records training jobs, so
    the cloud run's training is played by tests/sagemaker_double.py."""
    import hashlib

    from tests.sagemaker_double import play_training_job

    local = launched_id(invoke("launch", "mnist", "--local", *TINY_LOCAL, "--follow").stdout)
    best = Path(_run(local)["checkpoints"]) / "best.ckpt"
    digest = hashlib.sha256(best.read_bytes()).hexdigest()
    launched = invoke("launch", "mnist", "--gpu", "T4", "--from", f"{local}:best", *TINY_LOCAL, "--json")
    assert launched.exit_code == 0, launched.output
    cloud = json.loads(launched.stdout)["id"]
    sm = aws.client("sagemaker", endpoint_url=moto_endpoint)
    [channel] = sm.describe_training_job(TrainingJobName=cloud)["InputDataConfig"]
    uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
    assert channel["ChannelName"] == "init" and uri == f"s3://dl-test-bucket/dl/init/{digest}/"
    key = f"dl/init/{digest}/best.ckpt"
    body = aws.client("s3", endpoint_url=moto_endpoint).get_object(Bucket="dl-test-bucket", Key=key)["Body"]
    assert hashlib.sha256(body.read()).hexdigest() == digest

    played = play_training_job(aws, cloud, tmp_path / "container", endpoint_url=moto_endpoint)
    assert played.returncode == 0, played.output
    assert "dl: warm start from best.ckpt" in played.output  # the cloud run began from the local weights

    back = invoke("launch", "mnist", "--local", "--from", f"{cloud}:last", *TINY_LOCAL, "--follow")
    assert back.exit_code == 0, back.output
    assert "dl: warm start from last.ckpt" in _log(launched_id(back.stdout))

    # Cloud to cloud: the source run's checkpoint object is copied server-side into its own folder.
    again = json.loads(invoke("launch", "mnist", "--gpu", "T4", "--from", f"{cloud}:best", "--json").stdout)
    [channel] = sm.describe_training_job(TrainingJobName=again["id"])["InputDataConfig"]
    folder = channel["DataSource"]["S3DataSource"]["S3Uri"]
    assert folder.startswith("s3://dl-test-bucket/dl/init/s3-") and folder.endswith("/")
    listed = aws.client("s3", endpoint_url=moto_endpoint).list_objects_v2(
        Bucket="dl-test-bucket", Prefix=folder.split("/", 3)[3]
    )
    assert [o["Key"].rsplit("/", 1)[1] for o in listed["Contents"]] == ["best.ckpt"]


TINY_LOCAL = ["--set", "max_epochs=2", "--set", "limit_train_batches=3", "--set", "limit_val_batches=2"]
