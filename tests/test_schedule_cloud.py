"""Cloud schedules against moto's EventBridge Scheduler, SageMaker and S3 on 127.0.0.1.

moto stores schedules but never fires them. What EventBridge does at a fire time is played
from the test side, openly: substitute ``<aws.scheduler.execution-id>`` in the stored input and
call CreateTrainingJob with it under the scheduler's name (``fire``). Running the job is
``play_training_job``'s part, as in test_sagemaker.py.
"""

from __future__ import annotations

import json
import uuid

import pytest

from orchestrator.store import open_store
from tests.conftest import BUCKET, MNIST, REGION, invoke, runs_json
from tests.sagemaker_double import play_training_job
from tests.test_sagemaker import TINY_SAGEMAKER, validate_request

GROUP = "dl"
EXECUTION_ID = "<aws.scheduler.execution-id>"


@pytest.fixture
def cloud(aws, moto_endpoint, monkeypatch):
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                        "Principal": {"Service": "scheduler.amazonaws.com"}}]})  # fmt: skip
    role = aws.client("iam").create_role(RoleName="dl-scheduler", AssumeRolePolicyDocument=trust)
    monkeypatch.setenv("DL_SCHEDULER_ROLE_ARN", role["Role"]["Arn"])

    class Clients:
        session = aws
        endpoint = moto_endpoint
        scheduler = aws.client("scheduler", endpoint_url=moto_endpoint)
        sm = aws.client("sagemaker", endpoint_url=moto_endpoint)
        s3 = aws.client("s3", endpoint_url=moto_endpoint)
        scheduler_role = role["Role"]["Arn"]

    return Clients


def create(*args: str):
    result = invoke("schedule", "create", *args)
    assert result.exit_code == 0, result.output
    return result


def stored(cloud, name: str) -> dict:
    return cloud.scheduler.get_schedule(Name=name, GroupName=GROUP)


def fire(cloud, name: str) -> str:
    """What EventBridge does at a fire time: the input, with this firing's execution id, to CreateTrainingJob."""
    request = json.loads(stored(cloud, name)["Target"]["Input"].replace(EXECUTION_ID, str(uuid.uuid4())))
    cloud.sm.create_training_job(**request)
    return request["TrainingJobName"]


def test_create_stores_a_valid_create_training_job_request(cloud):
    result = create("weekly", "--job", "mnist", "--cron", "0 3 * * 1", "--timezone", "Europe/Berlin",
                    "--gpu", "T4", "--spot", "--retries", "3", "--window", "15", "--set", "lr=0.001")  # fmt: skip
    assert "cron(0 3 ? * 2 *) (Europe/Berlin)" in result.stdout and result.stdout.count("CET") == 3

    schedule = stored(cloud, "weekly")
    assert schedule["ScheduleExpression"] == "cron(0 3 ? * 2 *)"
    assert schedule["ScheduleExpressionTimezone"] == "Europe/Berlin"
    assert schedule["State"] == "ENABLED"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15}
    target = schedule["Target"]
    assert target["Arn"] == "arn:aws:scheduler:::aws-sdk:sagemaker:createTrainingJob"
    assert target["RoleArn"] == cloud.scheduler_role
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 3

    names = set()
    for _ in range(3):  # three firings, three execution ids
        request = json.loads(target["Input"].replace(EXECUTION_ID, str(uuid.uuid4())))
        validate_request(request)
        name = request["TrainingJobName"]
        assert len(name) <= 63 and name.startswith("weekly-")
        assert request["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/dl/runs/{name}/checkpoints"
        assert request["Environment"]["DL_RUN_ID"] == name
        tags = {t["Key"]: t["Value"] for t in request["Tags"]}
        assert tags["dl:schedule"] == "weekly" and tags["dl:run"] == name and tags["dl:job"] == "mnist"
        assert request["EnableManagedSpotTraining"] is True
        assert json.loads(request["HyperParameters"]["lr"]) == 0.001
        names.add(name)
    assert len(names) == 3

    # The package was uploaded once, at create, and the request pins it by hash.
    sha = open_store().get_schedule("weekly").package_hash
    submit = json.loads(request["HyperParameters"]["sagemaker_submit_directory"])
    assert submit == f"s3://{BUCKET}/dl/packages/{sha}/sourcedir.tar.gz"
    cloud.s3.head_object(Bucket=BUCKET, Key=f"dl/packages/{sha}/sourcedir.tar.gz")


def test_the_longest_name_stays_within_63(cloud):
    name = "n" * 26
    create(name, "--job", "mnist", "--cron", "rate(1 day)", "--target", "sagemaker")
    job = fire(cloud, name)
    assert len(job) == 63
    too_long = invoke(
        "schedule", "create", "n" * 27, "--job", "mnist", "--cron", "rate(1 day)", "--target", "sagemaker"
    )
    assert too_long.exit_code != 0 and "the limit is 26" in too_long.stderr


def test_list_pause_resume_delete(cloud):
    create("weekly", "--job", "mnist", "--cron", "rate(7 days)", "--target", "sagemaker")
    create("daily", "--job", "mnist", "--cron", "0 6 * * *", "--target", "sagemaker")
    listed = invoke("schedule", "list").stdout
    assert "weekly" in listed and "daily" in listed and "sagemaker" in listed
    assert sorted(s["Name"] for s in cloud.scheduler.list_schedules(GroupName=GROUP)["Schedules"]) == [
        "daily", "weekly"
    ]  # fmt: skip
    before = stored(cloud, "weekly")["Target"]["Input"]

    assert invoke("schedule", "pause", "weekly").exit_code == 0
    assert stored(cloud, "weekly")["State"] == "DISABLED"
    assert stored(cloud, "weekly")["Target"]["Input"] == before  # only the state changed
    assert "paused" in invoke("schedule", "list").stdout
    assert invoke("schedule", "resume", "weekly").exit_code == 0
    assert stored(cloud, "weekly")["State"] == "ENABLED"

    assert invoke("schedule", "delete", "weekly").exit_code == 0
    assert [s["Name"] for s in cloud.scheduler.list_schedules(GroupName=GROUP)["Schedules"]] == ["daily"]
    assert "weekly" not in invoke("schedule", "list").stdout


def test_a_scheduler_role_is_required(cloud, monkeypatch):
    monkeypatch.delenv("DL_SCHEDULER_ROLE_ARN")
    result = invoke("schedule", "create", "weekly", "--job", "mnist", "--cron", "rate(7 days)", "--target", "sagemaker")
    assert result.exit_code != 0
    assert "No scheduler role configured" in result.stderr and "DL_SCHEDULER_ROLE_ARN" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_update_repackages_and_repoints_the_request(cloud, tmp_path):
    import shutil

    job = tmp_path / "myjob"
    shutil.copytree(MNIST, job, ignore=shutil.ignore_patterns("__pycache__"))
    create("weekly", "--job", str(job), "--cron", "rate(7 days)", "--target", "sagemaker")
    old = open_store().get_schedule("weekly").package_hash
    (job / "model.py").write_text((job / "model.py").read_text() + "\n# changed\n")
    out = invoke("schedule", "update", "weekly").stdout
    assert "M model.py" in out
    new = open_store().get_schedule("weekly").package_hash
    assert new != old
    request = json.loads(stored(cloud, "weekly")["Target"]["Input"])
    assert new in request["HyperParameters"]["sagemaker_submit_directory"]
    cloud.s3.head_object(Bucket=BUCKET, Key=f"dl/packages/{new}/sourcedir.tar.gz")


@pytest.mark.train
def test_sync_imports_scheduled_runs_promotes_and_the_next_firing_warm_starts(cloud, tmp_path):
    create("weekly", "--job", "mnist", "--cron", "0 3 * * 1", "--gpu", "T4", "--promote-if", "val_acc:max",
           "--from", "weekly:best", "--from-optimizer", *TINY_SAGEMAKER)  # fmt: skip
    request = json.loads(stored(cloud, "weekly")["Target"]["Input"])
    init = [c for c in request["InputDataConfig"] if c["ChannelName"] == "init"][0]
    pointer = f"s3://{BUCKET}/dl/schedules/weekly/best/"
    assert init["DataSource"]["S3DataSource"]["S3Uri"] == pointer
    # SageMaker refuses an empty channel; a note keeps the pointer's prefix non-empty before any promotion.
    cloud.s3.head_object(Bucket=BUCKET, Key="dl/schedules/weekly/best/README.txt")

    first = fire(cloud, "weekly")
    unrelated = "someone-elses-job"
    cloud.sm.create_training_job(**{**request, "TrainingJobName": unrelated, "Tags": [{"Key": "team", "Value": "x"}]})
    played = play_training_job(cloud.session, first, tmp_path / "c1", endpoint_url=cloud.endpoint)
    assert played.returncode == 0, played.output
    assert "holds no checkpoint yet; training from scratch" in played.output

    synced = invoke("runs", "--sync")
    assert synced.exit_code == 0, synced.output
    assert "Imported 1 run(s)" in synced.stderr
    ids = [r["id"] for r in runs_json()]
    assert ids == [first]  # the untagged job is not dl's
    run = open_store().get(first)
    assert run.schedule == "weekly" and run.job == "mnist" and run.target == "sagemaker"
    assert run.status.value == "Completed" and 0.0 <= run.metrics["val_acc"] <= 1.0
    assert run.params["max_epochs"] == 2
    assert invoke("runs", "--sync").stderr == ""  # imported once

    # The promotion moved the pointer: a server-side copy of the run's best checkpoint.
    assert run.promotion["promoted"] is True
    assert open_store().get_schedule("weekly").best_run == first
    body = cloud.s3.get_object(Bucket=BUCKET, Key="dl/schedules/weekly/best/best.ckpt")["Body"].read()
    assert body == (played.base / "checkpoints" / "best.ckpt").read_bytes()

    # An imported run is an ordinary run: show, pull.
    assert json.loads(invoke("show", first, "--json").stdout)["status"] == "Completed"
    pulled = invoke("pull", first, "--to", str(tmp_path / "pulled"))
    assert pulled.exit_code == 0, pulled.output
    assert (tmp_path / "pulled" / "checkpoints" / "best.ckpt").is_file()

    # The next firing warm-starts from the pointer, with nothing from this machine.
    second = fire(cloud, "weekly")
    again = play_training_job(cloud.session, second, tmp_path / "c2", endpoint_url=cloud.endpoint)
    assert again.returncode == 0, again.output
    assert "dl: warm start from best.ckpt" in again.output
    assert "optimizer state restored too" in again.output
    shown = invoke("schedule", "show", "weekly")  # discovers the second run itself
    assert shown.exit_code == 0, shown.output
    assert first in shown.stdout and second in shown.stdout and "val_acc=" in shown.stdout
    assert open_store().get(second).promotion  # decided, promoted or not
    assert REGION == open_store().get(second).backend_state["region"]
