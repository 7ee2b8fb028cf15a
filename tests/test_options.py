"""Launch options declared once: the same flags on launch, sweep and schedule create, each one
reaching the backend from sweep, refusal of what a target does not take, and stored schedules
(versioned JSON, and the migration of schedules an older dl stored)."""

from __future__ import annotations

import json
import sqlite3
import time
import zipfile

import pytest

from orchestrator import api, scheduling, store
from orchestrator.errors import StoreError, UsageError
from orchestrator.options import LaunchOptions
from orchestrator.store import Run, RunStatus, open_store
from tests.conftest import BUCKET, MNIST, REGION, invoke

SHARED = {"--local", *(LaunchOptions.flag(name) for name in LaunchOptions.names())}


def _options_of(*path: str) -> dict[str, object]:
    """The click options of `dl PATH...`: flag -> (all its names, type, help)."""
    import typer

    from orchestrator.cli import app

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    out = {}
    for param in command.params:
        for opt in param.opts:
            out[opt] = (tuple(param.opts + param.secondary_opts), param.type.name, param.multiple)
    return out


def test_launch_sweep_and_schedule_create_declare_the_same_launch_options():
    commands = [_options_of("launch"), _options_of("sweep"), _options_of("schedule", "create")]
    for flag in SHARED:
        declared = [found.get(flag) for found in commands]
        assert declared[0] is not None, flag
        assert declared == [declared[0]] * 3, f"{flag} differs: {declared}"
    assert _options_of("launch")["--spot"][0] == ("--spot", "--on-demand")


def test_gpu_still_stands_alone_on_every_command(dl_home):
    # OptionalGpuCommand: a bare --gpu means any one GPU; here it then meets --local and is refused by name.
    for args in (["launch", "mnist"], ["sweep", "mnist", "--set", "lr=0.1"],
                 ["schedule", "create", "s", "--job", "mnist", "--cron", "rate(1 day)"]):  # fmt: skip
        result = invoke(*args, "--local", "--gpu")
        assert result.exit_code == 2 and "--gpu is for the sagemaker target, not --local" in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--local", "--max-hours", "1"], "--max-hours is for the sagemaker target, not --local."),
        (["--target", "local", "--image", "x"], "--image is for the sagemaker target, not local."),
        (["--on-demand"], "--on-demand is for the sagemaker target, not local."),
        (["--volume-gb", "9"], "--volume-gb is for the sagemaker target, not local."),
    ],
)
def test_an_option_the_target_does_not_take_is_one_line_naming_the_flag(dl_home, args, says):
    for command in (["launch", "mnist"], ["sweep", "mnist", "--set", "lr=0.1,0.2"]):
        result = invoke(*command, *args)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {says}"), result.stderr
    assert open_store().count() == 0 and not (dl_home / "packages").exists()  # refused before packaging


@pytest.mark.train
def test_the_api_takes_the_object_or_its_fields():
    the_plan = api.plan(str(MNIST), options=LaunchOptions(target="local"), overrides={"max_epochs": "1"})
    assert the_plan.target == "local" and the_plan.options.target == "local" and the_plan.data == {}
    with pytest.raises(UsageError, match="--spot is for the sagemaker target, not local"):
        api.plan(str(MNIST), target="local", spot=True)
    with pytest.raises(TypeError):
        api.plan(str(MNIST), gpus=1)  # not a launch option


def test_options_are_frozen_and_round_trip_as_versioned_json():
    options = LaunchOptions(target="sagemaker", data={"train": "s3://b/d/"}, gpu="T4", spot=False, nodes=2)
    with pytest.raises(AttributeError):
        options.gpu = "A10G"
    with pytest.raises(TypeError):
        options.data["x"] = "y"
    stored = options.to_json()
    assert stored == {"version": 1, "target": "sagemaker", "data": {"train": "s3://b/d/"}, "gpu": "T4",
                      "spot": False, "nodes": 2}  # fmt: skip
    assert LaunchOptions.from_json(json.loads(json.dumps(stored))) == options
    with pytest.raises(StoreError, match="version 2"):
        LaunchOptions.from_json({**stored, "version": 2})
    with pytest.raises(StoreError, match="unknown fields: gpus"):
        LaunchOptions.from_json({**stored, "gpus": 1})


def _recorded_source_run(dl_home) -> str:
    """A finished local run whose checkpoint folder holds best.ckpt (a zip, as torch.save writes):
    what --from reads. Recorded directly; how the checkpoint was trained does not matter here."""
    folder = dl_home / "runs" / "src" / "checkpoints"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "best.ckpt", "w") as archive:
        archive.writestr("archive/data.pkl", b"weights")
    run = Run(id="src", job="mnist", target="local", status=RunStatus.COMPLETED, created_at=time.time(),
              checkpoint_uri=str(folder))  # fmt: skip
    open_store().insert(run)
    return run.id


def test_sweep_takes_every_launch_option(aws, moto_endpoint, tmp_path, monkeypatch, dl_home):
    (tmp_path / "aws-config").write_text(f"[profile ml]\nregion = {REGION}\n")
    (tmp_path / "aws-credentials").write_text("[ml]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    source = _recorded_source_run(dl_home)
    image = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/my-training:1"
    sm = aws.client("sagemaker", endpoint_url=moto_endpoint)

    result = invoke("sweep", "mnist", "--set", "lr=0.1,0.01", "--instance-type", "ml.g5.xlarge", "--nodes", "2",
                    "--spot", "--max-hours", "2", "--volume-gb", "100", "--image", image, "--region", REGION,
                    "--profile", "ml", "--data", f"train=s3://{BUCKET}/data/mnist/", "--from", f"{source}:best",
                    "--from-optimizer")  # fmt: skip
    assert result.exit_code == 0, result.output
    runs = [r for r in open_store().list(target="sagemaker")]
    assert sorted(r.params["lr"] for r in runs) == [0.01, 0.1] and len({r.sweep for r in runs}) == 1
    for run in runs:
        job = sm.describe_training_job(TrainingJobName=run.id)
        assert job["ResourceConfig"] == {"InstanceType": "ml.g5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 100}
        assert job["AlgorithmSpecification"]["TrainingImage"] == image
        assert job["EnableManagedSpotTraining"] is True
        assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 7200
        channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
        assert channels["train"] == f"s3://{BUCKET}/data/mnist/" and channels["init"].startswith("s3://")
        assert json.loads(job["HyperParameters"]["init_optimizer"]) is True
        assert (run.backend_state["region"], run.backend_state["profile"]) == (REGION, "ml")

    result = invoke("sweep", "mnist", "--set", "lr=0.1", "--gpu", "T4", "--framework-version", "2.3.0", "--on-demand")
    assert result.exit_code == 0, result.output
    [run] = [r for r in open_store().list(target="sagemaker") if r.id not in {x.id for x in runs}]
    job = sm.describe_training_job(TrainingJobName=run.id)
    assert ":2.3.0-gpu-" in job["AlgorithmSpecification"]["TrainingImage"]
    assert job["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge" and not job.get("EnableManagedSpotTraining")


def _old_database(home, spec: dict, package_hash: str) -> None:
    """A DL_HOME as dl wrote it at schema 3: a local schedule whose spec holds ``data`` and
    ``allow_secrets`` beside a flat, unversioned ``options`` dict."""
    home.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(home / "dl.db", isolation_level=None)
    for migration in store._MIGRATIONS[:3]:
        for statement in migration.split(";"):
            if statement.strip():
                db.execute(statement)
    db.execute("PRAGMA user_version = 3")
    db.execute(
        "INSERT INTO schedules (name, job, target, expression, timezone, spec, package_hash, created_at)"
        " VALUES ('old', 'mnist', 'local', 'rate(1 day)', 'UTC', ?, ?, ?)",
        (json.dumps(spec), package_hash, time.time() - 2 * 86400),
    )
    db.close()


@pytest.mark.train
def test_a_schedule_stored_by_an_older_dl_is_migrated_shown_and_fires(dl_home, tmp_path):
    from orchestrator import settings
    from orchestrator.jobs import find_job
    from orchestrator.packaging import build_package

    job = find_job(str(MNIST))
    package = build_package(job, dl_home / "packages", settings.max_package_mb())
    digits = tmp_path / "digits"
    digits.mkdir()
    params = job.resolve({"max_epochs": "1", "limit_train_batches": "2", "limit_val_batches": "1"})
    spec = {"params": params, "data": {"extra": str(digits)}, "options": {}, "overrides": {"max_epochs": "1"},
            "job_dir": str(job.path), "files": scheduling.package_files(package.path), "from_schedule": None,
            "retries": None, "window_minutes": None, "allow_secrets": ["notes.pem"]}  # fmt: skip
    _old_database(dl_home, spec, package.sha256)

    shown = json.loads(invoke("schedule", "show", "old", "--json").stdout)
    assert shown["data"] == {"extra": str(digits)} and shown["options"] == {} and shown["target"] == "local"
    migrated = open_store().get_schedule("old").spec
    assert migrated["options"] == {"version": 1, "target": "local", "data": {"extra": str(digits)},
                                   "allow_secrets": ["notes.pem"]}  # fmt: skip
    assert "data" not in migrated and "allow_secrets" not in migrated
    assert migrated["params"] == json.loads(json.dumps(params))

    [decision] = scheduling.tick(time.time())
    assert decision.action == "started", decision.note
    run = api.wait(decision.run_id, timeout=300)
    assert run.status is RunStatus.COMPLETED, run.failure_reason
    assert run.data == {"extra": str(digits)} and run.package_hash == package.sha256 and run.schedule == "old"
