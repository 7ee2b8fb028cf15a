"""The sagemaker target through the CLI, against a moto server on 127.0.0.1 over real HTTP.

moto holds the training jobs, S3 and CloudWatch Logs. What moto does not do is played from
the test side (tests/sagemaker_double.py) and said so where it happens: running a job and
writing its outputs and logs (``play_training_job``), a job that is still running or
stopping, and StopTrainingJob (answers given by ``MotoProxy``, which otherwise forwards
every request to moto and counts them).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from orchestrator.backends.sagemaker import catalog
from orchestrator.store import open_store
from tests.conftest import BUCKET, MNIST, REGION, invoke, load_job_module, runs_json
from tests.sagemaker_double import LOG_GROUP, MotoProxy, aws_json, patched, play_training_job, put_log_lines

TINY_SAGEMAKER = ["--set", "max_epochs=2", "--set", "limit_train_batches=3", "--set", "limit_val_batches=2"]


@pytest.fixture
def moto(aws, moto_endpoint):
    """Test-side clients that talk to moto directly (never through the proxy, so never counted)."""

    class Clients:
        session = aws
        endpoint = moto_endpoint
        sm = aws.client("sagemaker", endpoint_url=moto_endpoint)
        s3 = aws.client("s3", endpoint_url=moto_endpoint)
        logs = aws.client("logs", endpoint_url=moto_endpoint)

    return Clients


@pytest.fixture
def proxy(aws, moto_endpoint, monkeypatch):
    """dl talks to moto through a recording proxy on 127.0.0.1."""
    with MotoProxy(moto_endpoint) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL", running.url)
        yield running


def launch(*args: str) -> dict:
    result = invoke("launch", "mnist", "--target", "sagemaker", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def validate_request(request: dict) -> None:
    """The request against botocore's own CreateTrainingJob input shape, independently of dl's check."""
    from botocore.session import get_session
    from botocore.validate import ParamValidator

    shape = get_session().get_service_model("sagemaker").operation_model("CreateTrainingJob").input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()


def write_idx(path: Path, array) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def bucket_keys(moto) -> list[str]:
    return [item["Key"] for item in moto.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def running_as(status: str):
    """A DescribeTrainingJob / ListTrainingJobs answer that is moto's own, but with the job(s) in
    ``status``: moto marks every job Completed at once and cannot express a running one."""

    def change(answer: dict) -> None:
        for job in answer.get("TrainingJobSummaries", [answer]):
            job["TrainingJobStatus"] = status
            job["SecondaryStatus"] = "Training" if status == "InProgress" else status
            if status in ("InProgress", "Stopping"):
                job.pop("TrainingEndTime", None)  # not ended yet

    return patched(change)


# -- dry run -----------------------------------------------------------------------------------


def test_dry_run_json_is_a_valid_request_and_sends_nothing(moto, proxy):
    result = invoke(
        "launch", "mnist", "--gpu", "A10G", "--spot", "--max-hours", "2", "--dry-run", "--json", "--no-smoke-test"
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["target"] == "sagemaker" and plan["smoke_test"] is None
    request = plan["request"]
    validate_request(request)
    sha = plan["package"]["sha256"]
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50}
    assert request["StoppingCondition"]["MaxRuntimeInSeconds"] == 7200
    assert request["StoppingCondition"]["MaxWaitTimeInSeconds"] >= 7200
    assert request["EnableManagedSpotTraining"] is True
    assert request["RoleArn"].endswith(":role/dl-sagemaker-execution")
    assert "pytorch-training" in request["AlgorithmSpecification"]["TrainingImage"]

    hyperparameters = request["HyperParameters"]
    assert all(isinstance(value, str) for value in hyperparameters.values())
    decoded = {key: json.loads(value) for key, value in hyperparameters.items()}
    assert hyperparameters["sagemaker_program"] == '"dl_entry.py"'
    assert decoded["sagemaker_submit_directory"] == f"s3://{BUCKET}/dl/packages/{sha}/sourcedir.tar.gz"
    assert decoded["sagemaker_region"] == REGION
    assert decoded["lr"] == 0.002 and decoded["precision"] == "32-true"
    assert "sagemaker_torch_distributed_enabled" not in decoded  # one GPU: no torchrun

    tags = {tag["Key"]: tag["Value"] for tag in request["Tags"]}
    assert tags["dl:job"] == "mnist" and tags["dl:run"] == request["TrainingJobName"] and tags["dl:package"] == sha

    cost = plan["cost"]
    assert cost["price_per_hour"] > 0 and cost["max_hours"] == 2
    assert cost["max_cost_on_demand"] == pytest.approx(2 * cost["price_per_hour"], abs=0.01)
    assert 0 < cost["max_cost_spot_estimate"] < cost["max_cost_on_demand"]
    assert plan["resources"]["instance_type"] == "ml.g5.xlarge" and plan["resources"]["gpus_per_node"] == 1

    # Nothing was sent: no request reached the proxy, and moto holds nothing.
    assert proxy.actions == []
    assert bucket_keys(moto) == []
    assert moto.sm.list_training_jobs()["TrainingJobSummaries"] == []
    assert runs_json() == []


@pytest.mark.train
def test_dry_run_text_prints_the_request_and_cost_and_passes_the_smoke_test(moto, proxy):
    result = invoke("launch", "mnist", "--gpu", "A10G", "--dry-run")  # smoke test on: one real batch
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Dry run: mnist on sagemaker" in out
    assert "1 x ml.g5.xlarge (1 GPU each) in us-east-1" in out
    assert "CreateTrainingJob request (validated against botocore's model):" in out
    request = json.loads(out[out.index("{", out.index("CreateTrainingJob request")) : out.index("\nSmoke test:")])
    validate_request(request)
    price = catalog.load().price("ml.g5.xlarge", REGION)
    assert f"Cost      ${price:.3f}/hour; at most 24 h: ${24 * price:.2f} on demand" in out
    assert "Smoke test passed" in out
    assert proxy.actions == [] and bucket_keys(moto) == []
    assert runs_json() == []


# -- launch ------------------------------------------------------------------------------------


def test_launch_uploads_the_package_once_and_creates_the_training_job(moto, dl_home):
    # Versioning makes every PutObject of the package key a new version: the honest upload count.
    moto.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    run = launch("--gpu", "T4", "--set", "max_epochs=2")
    run_id, sha = run["id"], run["package_hash"]
    assert run["target"] == "sagemaker" and run["status"] == "Pending"

    archive = dl_home / "packages" / f"{sha}.tar.gz"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == sha
    key = f"dl/packages/{sha}/sourcedir.tar.gz"
    assert moto.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == archive.read_bytes()

    job = moto.sm.describe_training_job(TrainingJobName=run_id)
    prefix = f"s3://{BUCKET}/dl/runs/{run_id}"
    assert job["TrainingJobName"] == run_id
    assert job["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge" and job["ResourceConfig"]["InstanceCount"] == 1
    assert job["RoleArn"].endswith(":role/dl-sagemaker-execution")
    assert job["CheckpointConfig"] == {"S3Uri": f"{prefix}/checkpoints", "LocalPath": "/opt/ml/checkpoints"}
    assert job["OutputDataConfig"]["S3OutputPath"] == f"{prefix}/output"
    assert json.loads(job["HyperParameters"]["sagemaker_submit_directory"]) == f"s3://{BUCKET}/{key}"
    assert job["HyperParameters"]["max_epochs"] == "2"
    assert "sagemaker_torch_distributed_enabled" not in job["HyperParameters"]
    tags = {t["Key"]: t["Value"] for t in moto.sm.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]}
    assert tags["dl:job"] == "mnist" and tags["dl:run"] == run_id and tags["dl:package"] == sha

    assert run["checkpoints"] == f"{prefix}/checkpoints"
    assert run["model"] == f"{prefix}/output/{run_id}/output/model.tar.gz"
    assert run["logs"] == f"cloudwatch:{LOG_GROUP}/{run_id}"

    again = launch("--gpu", "T4", "--set", "max_epochs=3")
    assert again["package_hash"] == sha and again["id"] != run_id
    versions = moto.s3.list_object_versions(Bucket=BUCKET, Prefix=key).get("Versions", [])
    assert len(versions) == 1, "unchanged code was uploaded again"
    second = moto.sm.describe_training_job(TrainingJobName=again["id"])["HyperParameters"]
    assert second["sagemaker_submit_directory"] == job["HyperParameters"]["sagemaker_submit_directory"]


def test_multi_gpu_multi_node_launch_runs_under_torchrun(moto):
    run = launch("--nodes", "2", "--gpu", "A10G:4")
    job = moto.sm.describe_training_job(TrainingJobName=run["id"])
    assert job["ResourceConfig"]["InstanceType"] == "ml.g5.12xlarge"
    assert job["ResourceConfig"]["InstanceCount"] == 2
    assert job["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"


# -- the whole way: launch, SageMaker's part played, then show / logs / pull ----------------


@pytest.mark.train
def test_a_played_training_job_shows_logs_and_pulls(moto, tmp_path):
    import numpy as np
    import torch

    # A data channel: a few 28x28 MNIST-format IDX files in moto's S3.
    rng = np.random.default_rng(0)
    idx = tmp_path / "idx"
    idx.mkdir()
    write_idx(idx / "train-images-idx3-ubyte", rng.integers(0, 256, (96, 28, 28), dtype=np.uint8))
    write_idx(idx / "train-labels-idx1-ubyte", rng.integers(0, 10, 96, dtype=np.uint8))
    for path in idx.iterdir():
        moto.s3.upload_file(str(path), BUCKET, f"data/mnist/{path.name}")

    run = launch("--gpu", "T4", *TINY_SAGEMAKER, "--data", f"train=s3://{BUCKET}/data/mnist/")
    run_id = run["id"]
    assert run["data"] == {"train": f"s3://{BUCKET}/data/mnist/"}

    # SageMaker's part: moto only records the job, so the test runs it (see sagemaker_double).
    played = play_training_job(moto.session, run_id, tmp_path / "container", endpoint_url=moto.endpoint)
    assert played.returncode == 0, played.output
    job = moto.sm.describe_training_job(TrainingJobName=run_id)
    # The container saw exactly the request's hyperparameters and the channel's files.
    written = json.loads((played.base / "input/config/hyperparameters.json").read_text())
    assert written == job["HyperParameters"]
    assert sorted(p.name for p in (played.base / "input/data/train").iterdir()) == sorted(p.name for p in idx.iterdir())
    assert "MNIST IDX from" in played.output and "epoch 2/2" in played.output

    shown = invoke("show", run_id, "--json")
    assert shown.exit_code == 0, shown.output
    state = json.loads(shown.stdout)
    assert state["status"] == "Completed" and state["terminal"] is True
    assert 0.0 <= state["metrics"]["val_acc"] <= 1.0 and "train_loss" in state["metrics"]  # from summary.json
    assert state["started_at"] and state["ended_at"]
    assert state["checkpoints"] == job["CheckpointConfig"]["S3Uri"]
    assert state["model"] == job["ModelArtifacts"]["S3ModelArtifacts"]
    # Its learning curve came from metrics.csv inside output.tar.gz, as for a local run.
    from orchestrator import api

    curve = api.epoch_metrics(run_id)
    assert [row["epoch"] for row in curve] == [0, 1] and all("val_acc" in row for row in curve)
    plotted = invoke("plot", run_id)
    assert plotted.exit_code == 0 and run_id in plotted.stdout

    dest = tmp_path / "pulled"
    pulled = invoke("pull", run_id, "--to", str(dest))
    assert pulled.exit_code == 0, pulled.output
    best = dest / "checkpoints" / "best.ckpt"
    assert best.read_bytes() == (played.base / "checkpoints" / "best.ckpt").read_bytes()
    assert (dest / "model" / "model.ckpt").read_bytes() == (played.base / "model" / "model.ckpt").read_bytes()
    assert not [p for p in dest.rglob("*") if p.name.endswith(".pulling")]
    model_module = load_job_module(MNIST / "model.py", "dl_sagemaker_mnist_model")
    for path in (best, dest / "model" / "model.ckpt"):
        model = model_module.DigitCNN.load_from_checkpoint(path, map_location="cpu").eval()
        assert model.hparams.lr == 0.002
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)

    logs = invoke("logs", run_id)
    assert logs.exit_code == 0, logs.output
    assert "epoch 1/2" in logs.stdout and "epoch 2/2" in logs.stdout
    assert logs.stdout.index("epoch 1/2") < logs.stdout.index("epoch 2/2")


# -- refresh -----------------------------------------------------------------------------------


def test_runs_refreshes_a_pending_run_from_describe(moto, proxy):
    run_id = launch("--gpu", "T4")["id"]
    proxy.reset_counts()
    [listed] = runs_json()
    assert listed["id"] == run_id and listed["status"] == "Completed"  # moto completes jobs at once
    assert listed["started_at"] and listed["ended_at"]
    assert proxy.count("SageMaker.DescribeTrainingJob") == 1 and proxy.count("SageMaker.ListTrainingJobs") == 0
    proxy.reset_counts()
    runs_json()
    assert proxy.count("SageMaker.") == 0  # a finished run is not asked about again


def test_runs_refreshes_many_runs_with_one_list_call(moto, proxy):
    ids = [launch("--gpu", "T4")["id"] for _ in range(3)]
    store = open_store()
    for run_id in ids:
        # As dl records it after a DescribeTrainingJob that said InProgress: moto cannot express a
        # running job (it marks every job Completed at once), so the store is put there directly.
        assert store.mark_in_progress(run_id, started_at=store.get(run_id).created_at)

    # While SageMaker says the jobs are running: one ListTrainingJobs page, no DescribeTrainingJob.
    proxy.answer("SageMaker.ListTrainingJobs", running_as("InProgress"))
    proxy.reset_counts()
    assert {r["id"]: r["status"] for r in runs_json()} == dict.fromkeys(ids, "InProgress")
    assert proxy.count("SageMaker.ListTrainingJobs") == 1
    assert proxy.count("SageMaker.DescribeTrainingJob") == 0

    # Once they have ended (moto's own answer): one list, then one describe per run that changed.
    proxy.answer("SageMaker.ListTrainingJobs", None)
    proxy.reset_counts()
    runs = runs_json()
    assert {r["id"]: r["status"] for r in runs} == dict.fromkeys(ids, "Completed")
    assert all(r["started_at"] and r["ended_at"] and r["ended_at"] >= r["started_at"] for r in runs)
    assert proxy.count("SageMaker.ListTrainingJobs") == 1
    assert proxy.count("SageMaker.DescribeTrainingJob") == len(ids)


# -- stop and follow ---------------------------------------------------------------------------


def test_stop_sends_stop_training_job_and_the_run_ends_stopped(moto, proxy):
    run_id = launch("--gpu", "T4")["id"]
    # moto has no StopTrainingJob and no running jobs: the proxy plays both. The job runs until
    # StopTrainingJob arrives, then reads Stopping until the test lets it finish stopping.
    job_status = {"value": "InProgress"}

    def stop(exchange):
        assert json.loads(exchange.body) == {"TrainingJobName": run_id}
        job_status["value"] = "Stopping"
        return aws_json({})

    proxy.answer("SageMaker.StopTrainingJob", stop)
    proxy.answer("SageMaker.DescribeTrainingJob", lambda ex: running_as(job_status["value"])(ex))

    stopped = invoke("stop", run_id)
    assert stopped.exit_code == 0, stopped.output
    assert f"{run_id} Stopping" in stopped.stdout
    assert proxy.count("SageMaker.StopTrainingJob") == 1
    shown = json.loads(invoke("show", run_id, "--json").stdout)
    assert shown["status"] == "Stopping" and shown["terminal"] is False

    job_status["value"] = "Stopped"
    shown = json.loads(invoke("show", run_id, "--json").stdout)
    assert shown["status"] == "Stopped" and shown["ended_at"] and shown["failure_reason"] is None
    again = invoke("stop", run_id)
    assert again.exit_code == 0 and "already ended (Stopped)" in again.stdout
    assert proxy.count("SageMaker.StopTrainingJob") == 1


def test_logs_follow_prints_new_events_and_ends_when_the_job_ends(moto, proxy):
    run_id = launch("--gpu", "T4")["id"]
    stream = f"{run_id}/algo-1-1700000000"
    moto.logs.create_log_group(logGroupName=LOG_GROUP)
    moto.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    put_log_lines(moto.logs, stream, ["epoch 1/2  train_loss=0.9000"])
    # moto cannot run a job: the first time dl asks, the job is running and prints one more
    # line; after that moto's own answer (Completed) stands.
    asked = []

    def still_running(exchange):
        asked.append(1)
        if len(asked) > 1:
            return exchange.forward()
        put_log_lines(moto.logs, stream, ["epoch 2/2  train_loss=0.5000"])
        return running_as("InProgress")(exchange)

    proxy.answer("SageMaker.DescribeTrainingJob", still_running)
    followed = invoke("logs", run_id, "--follow")
    assert followed.exit_code == 0, followed.output
    assert followed.stdout == "epoch 1/2  train_loss=0.9000\nepoch 2/2  train_loss=0.5000\n"
    assert len(asked) == 2
    assert json.loads(invoke("show", run_id, "--json").stdout)["status"] == "Completed"
