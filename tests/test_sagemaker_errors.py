"""Cloud failures on the sagemaker target: one line that says what to do, a non-zero exit, no traceback.

Everything goes over real HTTP to the moto server on 127.0.0.1. The errors moto cannot produce
(a quota of zero, a role SageMaker cannot assume, AccessDenied, throttling) are AWS's own
error answers, given by the recording proxy in tests/sagemaker_double.py in AWS's JSON shape.

A failure found before the run is recorded (bad flags, a local channel) leaves the store as it
was; one found while starting it (api.start) leaves the run Failed with "Could not start: ...".
"""

from __future__ import annotations

import pytest

from tests.conftest import BUCKET, invoke, runs_json
from tests.sagemaker_double import MotoProxy, Reply, aws_json_error


@pytest.fixture
def proxy(aws, moto_endpoint, monkeypatch):
    """dl talks to moto through a recording proxy on 127.0.0.1."""
    with MotoProxy(moto_endpoint) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL", running.url)
        yield running


@pytest.fixture
def moto_sm(aws, moto_endpoint):
    return aws.client("sagemaker", endpoint_url=moto_endpoint)


def launch(*args: str):
    return invoke("launch", "mnist", *args)


def one_line_error(result, *fragments: str, exit_code: int = 1) -> str:
    """The command failed with ``exit_code`` and said so in one line on stderr, with no traceback."""
    assert result.exit_code == exit_code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def failed_run(line: str) -> dict:
    """The store holds exactly one run, Failed with the error that was printed as its reason."""
    [run] = runs_json()
    assert run["status"] == "Failed" and run["target"] == "sagemaker"
    assert run["failure_reason"] == "Could not start: " + line.removeprefix("Error: ")
    return run


CREATE = "SageMaker.CreateTrainingJob"


# -- credentials and permissions -------------------------------------------------------------


def test_no_credentials(proxy, moto_sm, monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "empty-credentials").write_text("")
    (tmp_path / "empty-config").write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "empty-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "empty-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find here
    one_line_error(launch("--gpu", "T4"), "No AWS credentials found", "aws configure")
    assert proxy.actions == []  # nothing unsigned went out
    assert runs_json() == []  # found before a run was recorded


def test_quota_of_zero_names_the_instance_type_and_service_quotas(proxy, moto_sm):
    message = (
        "The account-level service limit 'ml.g5.xlarge for spot training job usage' is 0 Instances, with current "
        "utilization of 0 Instances and a request delta of 1 Instances. Please use AWS Service Quotas to request an "
        "increase for this quota. If AWS Service Quotas is not available, contact AWS support to request an increase "
        "for this quota."
    )
    proxy.answer(CREATE, aws_json_error("ResourceLimitExceeded", message))
    line = one_line_error(
        launch("--gpu", "A10G", "--spot"), "quota for ml.g5.xlarge (spot)", "Service Quotas", "another --gpu"
    )
    assert proxy.count(CREATE) == 1
    assert moto_sm.list_training_jobs()["TrainingJobSummaries"] == []
    failed_run(line)


def test_access_denied_names_the_action(proxy):
    message = (
        "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: sagemaker:CreateTrainingJob on "
        "resource: arn:aws:sagemaker:us-east-1:123456789012:training-job/x because no identity-based policy allows "
        "the sagemaker:CreateTrainingJob action"
    )
    proxy.answer(CREATE, aws_json_error("AccessDeniedException", message))
    line = one_line_error(launch("--gpu", "T4"), "Access denied", "not allowed to sagemaker:CreateTrainingJob", "IAM")
    failed_run(line)


def test_access_denied_on_the_package_upload_names_the_action(proxy, aws):
    # S3's answer to a PutObject the policy does not allow (XML, 403).
    body = (
        "<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>AccessDenied</Code><Message>User: "
        "arn:aws:iam::123456789012:user/dev is not authorized to perform: s3:PutObject on resource: "
        f'"arn:aws:s3:::{BUCKET}/dl/packages/x" because no identity-based policy allows the s3:PutObject '
        "action</Message><RequestId>dl-test</RequestId></Error>"
    )
    proxy.answer(f"PUT /{BUCKET}/dl/packages/", Reply(403, {"Content-Type": "application/xml"}, body.encode()))
    line = one_line_error(launch("--gpu", "T4"), "Access denied while uploading", "not allowed to s3:PutObject")
    assert proxy.count(CREATE) == 0
    failed_run(line)


def test_a_role_sagemaker_cannot_assume(proxy):
    role = "arn:aws:iam::123456789012:role/dl-sagemaker-execution"
    message = (
        f"Could not assume role {role}. Please ensure that the role exists and allows principal "
        "'sagemaker.amazonaws.com' to assume the role."
    )
    proxy.answer(CREATE, aws_json_error("ValidationException", message))
    line = one_line_error(launch("--gpu", "T4"), "SageMaker cannot assume the execution role", role,
                          "sagemaker.amazonaws.com")  # fmt: skip
    failed_run(line)


def test_throttling_is_retried_then_reported_once(proxy, monkeypatch):
    # Fewer, faster retries than dl's default, through botocore's own settings.
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    proxy.answer(CREATE, aws_json_error("ThrottlingException", "Rate exceeded"))
    line = one_line_error(launch("--gpu", "T4"), "AWS kept throttling dl while creating training job", "try again")
    assert proxy.count(CREATE) == 3  # botocore retried before the error reached the user
    failed_run(line)


# -- configuration -----------------------------------------------------------------------------


def test_a_bucket_that_does_not_exist(proxy, monkeypatch):
    monkeypatch.setenv("DL_BUCKET", "dl-no-such-bucket")
    line = one_line_error(launch("--gpu", "T4"), "The S3 bucket does not exist", "DL_BUCKET")
    assert proxy.count(CREATE) == 0
    failed_run(line)


def test_no_bucket_configured(proxy, monkeypatch):
    monkeypatch.delenv("DL_BUCKET")
    line = one_line_error(
        launch("--gpu", "T4"), "No S3 bucket configured for the sagemaker target", "DL_BUCKET", "dl.toml", exit_code=2
    )
    assert proxy.actions == [] and "Error: " in line
    assert runs_json() == []  # found before a run was recorded


def test_a_local_channel_on_the_sagemaker_target(proxy, tmp_path):
    (tmp_path / "digits").mkdir()
    result = launch("--gpu", "T4", "--data", f"train={tmp_path / 'digits'}")
    one_line_error(result, "Channel train is a local path", "aws s3 sync", exit_code=2)
    assert proxy.actions == [] and runs_json() == []
    (tmp_path / "resnet18.pth").write_bytes(b"weights")  # a file channel: the hint copies the file
    result = launch("--gpu", "T4", "--data", f"weights={tmp_path / 'resnet18.pth'}")
    one_line_error(result, "Channel weights is a local path", "aws s3 cp", "data/weights/resnet18.pth", exit_code=2)


def test_gpu_with_local(proxy):
    result = launch("--gpu", "T4", "--local")
    one_line_error(result, "--gpu is for the sagemaker target, not --local", exit_code=2)
    assert proxy.actions == [] and runs_json() == []


def test_unknown_gpu_suggests_the_nearest(proxy):
    result = launch("--gpu", "A10")
    one_line_error(result, "Unknown GPU 'A10'. Did you mean 'A10G'?", "dl gpus", exit_code=2)
    assert proxy.actions == [] and runs_json() == []


def test_a_failed_start_leaves_no_job_and_json_is_not_printed(proxy, moto_sm):
    proxy.answer(CREATE, aws_json_error("ResourceLimitExceeded", "The account-level service limit is 0 Instances."))
    result = launch("--gpu", "T4", "--json")
    one_line_error(result, "quota for ml.g4dn.xlarge")
    assert result.stdout == ""  # no half-made run printed as JSON
    assert moto_sm.list_training_jobs()["TrainingJobSummaries"] == []
