"""`dl doctor` against the moto server on 127.0.0.1: everything right, then each thing wrong in turn.

What moto can express is set up in moto itself, over HTTP: no stack, a missing role, a role that
does not trust SageMaker, a bucket in another region, a bucket that does not exist, no
credentials. What it cannot: moto's Service Quotas knows only a few VPC quotas and has no
ListServiceQuotas (it answers HTTP 500, which botocore would retry for seconds). So the quota
is the one call driven at our seam: the Account that ``account.connect`` returns is the real one
wrapped in ``Mock(spec=Account, wraps=...)`` with only ``quota`` answering from the test.
The torch check runs a real child process (and fake interpreters for the broken cases).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from unittest.mock import Mock

import pytest

from orchestrator import doctor
from orchestrator.backends.sagemaker import account as account_mod
from orchestrator.backends.sagemaker import doctor as aws_doctor
from orchestrator.backends.sagemaker import infra
from orchestrator.backends.sagemaker.account import Account, Quota, find_quota, trusted_services
from orchestrator.backends.sagemaker.aws import Aws, AwsError
from tests.conftest import REGION, invoke
from tests.test_infra import EXECUTION_ROLE, STACK_BUCKET, TEMPLATE

NAMES = ["python", "packages", "config", "region", "credentials", "stack", "bucket", "role", "quota"]


def _seam(monkeypatch, quota: Quota | None | Exception) -> Mock:
    """Real Account on moto; only Service Quotas answers from the test."""
    real = Account(Aws(REGION))
    seam = Mock(spec=Account, wraps=real)
    seam.region = real.region
    if isinstance(quota, Exception):
        seam.quota.side_effect = quota
    else:
        seam.quota.return_value = quota
    monkeypatch.setattr(account_mod, "connect", lambda region, profile=None: seam)
    return seam


def _quota(value: float, instance: str = "ml.g5.xlarge") -> Quota:
    return Quota(f"{instance} for training job usage", "L-A1B2C3D4", value)


@pytest.fixture
def deployed(aws, monkeypatch):
    """dl's stack in moto (CreateStack, so moto resolves its Outputs) and dl.toml written from it,
    as `dl infra deploy` leaves a project."""
    aws.client("cloudformation").create_stack(
        StackName="dl", TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_NAMED_IAM"]
    )
    for var in ("DL_BUCKET", "DL_ROLE_ARN"):  # the aws fixture's bucket and role: not the stack's
        monkeypatch.delenv(var)
    account = Account(Aws(REGION))
    infra.save(infra.status(account, "dl"))
    return aws


def _by_name(checks) -> dict[str, doctor.Check]:
    return {check.name: check for check in checks}


@pytest.mark.train
def test_everything_right_passes_and_json_lists_every_check(deployed, monkeypatch):
    seam = _seam(monkeypatch, _quota(2))
    result = invoke("doctor", "--json", "--gpu", "A10G")  # --local is the default: a real torch import
    assert result.exit_code == 0, result.output
    checks = json.loads(result.stdout)
    assert [c["name"] for c in checks] == NAMES + ["local"]
    assert all(c["ok"] and c["status"] == "ok" for c in checks), checks
    shown = {c["name"]: c["line"] for c in checks}
    assert shown["credentials"].startswith("AWS credentials for arn:aws:sts::123456789012:user/moto from ")
    assert "testing" not in result.stdout  # the fixture's access key and secret
    assert shown["stack"] == "Stack 'dl' is CREATE_COMPLETE; dl's settings match its outputs"
    assert shown["bucket"] == f"Bucket s3://{STACK_BUCKET}/dl/ is reachable, in us-east-1"
    assert shown["role"] == f"Role {EXECUTION_ROLE} exists and trusts sagemaker.amazonaws.com"
    assert shown["quota"] == "Quota 'ml.g5.xlarge for training job usage' is 2 in us-east-1"
    assert shown["local"].startswith("torch 2.") and "lightning 2." in shown["local"]
    seam.quota.assert_called_once_with("sagemaker", "ml.g5.xlarge for training job usage")


def test_text_output_marks_each_check_and_says_all_passed(deployed, monkeypatch):
    _seam(monkeypatch, _quota(1, "ml.g4dn.xlarge"))
    result = invoke("doctor", "--no-local")  # no --gpu and none configured: the cheapest 1-GPU type
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [["✓", name] for name in NAMES]
    assert "ml.g4dn.xlarge for training job usage" in result.stdout
    assert lines[-1] == "All checks passed."


def test_zero_gpu_quota_fails_with_the_request_to_make(deployed, monkeypatch):
    _seam(monkeypatch, _quota(0))
    result = invoke("doctor", "--no-local", "--gpu", "A10G")
    assert result.exit_code == 1
    assert "✗ quota" in result.stdout and "is 0 in us-east-1" in result.stdout
    assert "new accounts start at 0" in result.stdout
    assert "--service-code sagemaker --quota-code L-A1B2C3D4 --desired-value 1" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 check failed: quota."


def test_spot_launches_check_the_spot_quota(deployed, monkeypatch):
    seam = _seam(monkeypatch, _quota(4))
    monkeypatch.setenv("DL_SPOT", "true")
    checks = _by_name(doctor.run(gpu="A10G", local=False))
    assert checks["quota"].ok
    seam.quota.assert_called_once_with("sagemaker", "ml.g5.xlarge for spot training job usage")


def test_an_unreadable_quota_warns_without_failing(deployed, monkeypatch):
    denied = AwsError("Access denied while reading sagemaker quotas.", "Grant servicequotas:ListServiceQuotas.")
    _seam(monkeypatch, denied)
    checks = _by_name(doctor.run(gpu="A10G", local=False))
    assert checks["quota"].status == "warn" and "Access denied" in checks["quota"].line
    assert doctor.exit_code(list(checks.values())) == 0


def test_no_stack_and_nothing_configured(aws, monkeypatch):
    for var in ("DL_BUCKET", "DL_ROLE_ARN"):
        monkeypatch.delenv(var)
    _seam(monkeypatch, _quota(1))
    result = invoke("doctor", "--no-local", "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["stack"]["line"] == "No stack 'dl' in us-east-1" and not checks["stack"]["ok"]
    assert checks["stack"]["fix"].startswith("Run `dl infra deploy --region us-east-1`")
    assert checks["bucket"]["line"] == "No S3 bucket configured" and not checks["bucket"]["ok"]
    assert checks["role"]["line"] == "No SageMaker execution role configured"


def test_no_stack_with_a_bucket_and_role_of_ones_own_only_warns(aws, monkeypatch):
    _seam(monkeypatch, _quota(1))  # the aws fixture's bucket and role, given by DL_BUCKET and DL_ROLE_ARN
    checks = _by_name(doctor.run(local=False))
    assert checks["stack"].status == "warn" and "dl uses aws.bucket and aws.role_arn" in checks["stack"].line
    assert checks["bucket"].status == checks["role"].status == "ok"
    assert doctor.exit_code(list(checks.values())) == 0


def test_missing_role(deployed, monkeypatch):
    iam = deployed.client("iam")
    iam.delete_role_policy(RoleName=EXECUTION_ROLE, PolicyName="dl-training")
    iam.delete_role(RoleName=EXECUTION_ROLE)
    _seam(monkeypatch, _quota(1))
    result = invoke("doctor", "--no-local")
    assert result.exit_code == 1
    assert f"✗ role         Role {EXECUTION_ROLE} does not exist (aws.role_arn from dl.toml (" in result.stdout
    assert "fix: Run `dl infra deploy` to create it" in result.stdout


def test_role_that_sagemaker_cannot_assume(deployed, monkeypatch):
    ec2_only = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    deployed.client("iam").update_assume_role_policy(RoleName=EXECUTION_ROLE, PolicyDocument=json.dumps(ec2_only))
    _seam(monkeypatch, _quota(1))
    checks = _by_name(doctor.run(local=False))
    assert checks["role"].status == "fail"
    assert checks["role"].line == (
        f"Role {EXECUTION_ROLE} trusts ec2.amazonaws.com, not sagemaker.amazonaws.com: SageMaker cannot assume it"
    )


def test_role_of_another_account(deployed, monkeypatch):
    monkeypatch.setenv("DL_ROLE_ARN", f"arn:aws:iam::999999999999:role/{EXECUTION_ROLE}")
    _seam(monkeypatch, _quota(1))
    checks = _by_name(doctor.run(local=False))
    assert checks["role"].status == "fail" and "belongs to account 999999999999" in checks["role"].line
    assert checks["stack"].status == "warn" and "aws.role_arn is" in checks["stack"].line  # not the stack's


def test_bucket_in_another_region(deployed, monkeypatch):
    deployed.client("s3").create_bucket(
        Bucket="dl-ireland", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    monkeypatch.setenv("DL_BUCKET", "dl-ireland")
    _seam(monkeypatch, _quota(1))
    result = invoke("doctor", "--no-local")
    assert result.exit_code == 1
    assert "✗ bucket" in result.stdout
    assert "Bucket dl-ireland is in eu-west-1, but dl is set to us-east-1" in result.stdout
    assert "`dl config set aws.region eu-west-1`" in result.stdout


def test_bucket_that_does_not_exist(deployed, monkeypatch):
    monkeypatch.setenv("DL_BUCKET", "dl-gone")
    _seam(monkeypatch, _quota(1))
    checks = _by_name(doctor.run(local=False))
    assert checks["bucket"].status == "fail"
    assert checks["bucket"].line == "Bucket dl-gone does not exist (aws.bucket from DL_BUCKET)"


def test_no_credentials_skips_what_needs_them(deployed, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup on a CI machine
    result = invoke("doctor", "--no-local", "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["credentials"]["status"] == "fail"
    assert checks["credentials"]["line"].startswith("No AWS credentials found")
    assert "aws configure" in checks["credentials"]["fix"]
    assert [checks[n]["status"] for n in ("stack", "bucket", "role", "quota")] == ["skip"] * 4


def test_no_region(aws, monkeypatch):
    for var in ("DL_REGION", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    checks = _by_name(doctor.run(local=False))
    assert checks["region"].status == "fail" and "dl config set aws.region" in checks["region"].fix
    assert checks["credentials"].status == "skip"


def test_a_broken_dl_toml_is_a_failed_check_not_a_crash(aws):
    Path("dl.toml").write_text("[aws]\nbukcet = 'x'\n")
    result = invoke("doctor", "--no-local")
    assert result.exit_code == 1
    assert "✗ config" in result.stdout and "Unknown key 'bukcet' under [aws]" in result.stdout
    assert "fix: Did you mean 'bucket'?" in result.stdout
    assert "- region" in result.stdout  # skipped: needs settings


def test_unknown_gpu_is_bad_input(aws):
    result = invoke("doctor", "--no-local", "--gpu", "Z9000")
    assert result.exit_code == 2 and "Unknown GPU 'Z9000'" in result.stderr


# -- the local check: a child process with a timeout -------------------------------------------


def _fake_python(tmp_path: Path, body: str) -> str:
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_a_torch_import_that_hangs_is_cut_off(tmp_path):
    check = doctor.LocalProbe(python=_fake_python(tmp_path, "exec sleep 30"), timeout=0.5).result()
    assert check.status == "fail" and check.line == "Importing torch did not finish in 0.5s"
    assert "broken CUDA" in check.fix


def test_missing_torch_fails_for_local_and_only_warns_for_the_cloud(tmp_path):
    python = _fake_python(tmp_path, "echo \"ModuleNotFoundError: No module named 'torch'\" >&2; exit 1")
    local = doctor.LocalProbe(python=python).result(target="local")
    assert local.status == "fail" and "No module named 'torch'" in local.line
    assert "pip install -e '.[train]'" in local.fix
    assert doctor.LocalProbe(python=python).result(target="sagemaker").status == "warn"


def test_gpus_seen_by_torch_are_named(tmp_path):
    names = ["NVIDIA H100", "NVIDIA H100"]
    answer = {"torch": "2.13.0", "lightning": "2.6.6", "cuda": 2, "names": names, "seconds": 1.5}
    python = _fake_python(tmp_path, f"echo '{json.dumps(answer)}'")
    check = doctor.LocalProbe(python=python).result()
    assert check.ok and check.line.endswith("(1.5s); 2 CUDA GPUs (NVIDIA H100)")


# -- small pieces --------------------------------------------------------------------------


def test_python_too_old_fails():
    assert doctor.check_python((3, 10, 4)).status == "fail"
    assert doctor.check_python((3, 11, 0)).ok


def test_trust_policies_in_their_several_shapes():
    listed = {"Statement": [{"Effect": "Allow", "Action": ["sts:AssumeRole"],
                             "Principal": {"Service": ["ec2.amazonaws.com", "sagemaker.amazonaws.com"]}}]}  # fmt: skip
    assert trusted_services(listed) == ("ec2.amazonaws.com", "sagemaker.amazonaws.com")
    encoded = "%7B%22Statement%22%3A%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22sts%3AAssumeRole%22%2C"
    encoded += "%22Principal%22%3A%7B%22Service%22%3A%22sagemaker.amazonaws.com%22%7D%7D%7D"
    assert trusted_services(encoded) == ("sagemaker.amazonaws.com",)
    denied = {"Statement": [{"Effect": "Deny", "Action": "sts:AssumeRole", "Principal": {"Service": "x"}}]}
    assert trusted_services(denied) == ()


def test_quota_names_match_service_quotas_ignoring_case():
    quotas = [{"QuotaName": "ml.g5.xlarge for spot training job usage", "Value": 0.0},
              {"QuotaName": "ML.G5.XLARGE for training job usage", "Value": 1.0}]  # fmt: skip
    assert find_quota(quotas, aws_doctor.quota_name("ml.g5.xlarge", spot=False))["Value"] == 1.0
    assert find_quota(quotas, aws_doctor.quota_name("ml.g5.xlarge", spot=True))["Value"] == 0.0
    assert find_quota(quotas, "ml.p5.48xlarge for training job usage") is None
