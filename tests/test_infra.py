"""`dl infra`: the CloudFormation template (cfn-lint, least privilege) and deploy / status / update /
destroy against the moto server on 127.0.0.1 (real HTTP: CloudFormation, S3, IAM, Logs).

Where moto 5.2.5 differs from CloudFormation, and how these tests handle it:

* A stack created by executing a change set never gets its Outputs in moto (execute_change_set
  does not rebuild the output map; stacks made with CreateStack do get them). Real CloudFormation
  always resolves them. Tests of the CREATE path therefore hand dl an Account (our seam,
  ``account.connect``) that wraps the real one with ``Mock(spec=Account, wraps=...)`` and fills
  in the Outputs from the resources moto really created, the values the template's Outputs name.
  Everything else still goes to moto. The UPDATE tests need no help: they start from a stack
  made with CreateStack, whose Outputs moto keeps.
* moto records only stack-level events and never fails a change set's execution with resource
  events (a resource error becomes an HTTP error instead). The "failed deploy names the first
  failing resource" test drives CloudFormation's real event sequence through a
  ``Mock(spec=Account)``.
* moto answers CreateChangeSet with "No updates are to be performed." when nothing changed, where
  CloudFormation creates a FAILED change set; dl treats both as "up to date".
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from unittest.mock import Mock

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator import config
from orchestrator.backends.sagemaker import account as account_mod
from orchestrator.backends.sagemaker import infra
from orchestrator.backends.sagemaker.account import Account, Change, ChangeSet, Stack, StackEvent
from orchestrator.backends.sagemaker.aws import Aws
from orchestrator.cli import app
from tests.conftest import REGION, REPO, invoke

TEMPLATE = REPO / "infra" / "dl.yaml"
ACCOUNT_ID = "123456789012"  # moto's
STACK_BUCKET = f"dl-{ACCOUNT_ID}-{REGION}"
EXECUTION_ROLE = f"dl-sagemaker-{REGION}"
SCHEDULER_ROLE = f"dl-scheduler-{REGION}"


# -- the template ---------------------------------------------------------------------------


def _cfn_lint(path: Path) -> tuple[int, list[dict]]:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    assert cfn_lint.is_file(), "cfn-lint is not installed here: pip install -e '.[dev]'"
    result = subprocess.run(
        [str(cfn_lint), str(path), "--format", "json", "--include-checks", "I"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, json.loads(result.stdout or "[]")


def test_template_passes_cfn_lint_with_no_errors_warnings_or_infos(tmp_path):
    code, findings = _cfn_lint(TEMPLATE)
    assert findings == [] and code == 0, findings
    # The linter really reads the file: a broken copy is flagged.
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("BlockPublicAcls: true", 'BlockPublicAcls: "maybe"'))
    code, findings = _cfn_lint(broken)
    assert code != 0 and any(f["Rule"]["Id"] == "E3012" for f in findings), findings


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms: ``!Sub x`` → ``{"Fn::Sub": x}``, ``!Ref x`` → ``{"Ref": x}``."""


def _short_form(loader, tag, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref" if tag == "Ref" else f"Fn::{tag}": value}  # the tag comes without its "!"


_CfnLoader.add_multi_constructor("!", _short_form)


@pytest.fixture(scope="module")
def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # noqa: S506 (SafeLoader subclass)


def _statements(document: dict) -> list[dict]:
    found = []
    for statement in document["Statement"]:
        if "Fn::If" in statement:  # [condition, statement, AWS::NoValue]
            found += [s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s]
        else:
            found.append(statement)
    return found


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_policies_grant_no_wildcard_resource_except_where_aws_allows_nothing_narrower(template):
    resources = template["Resources"]
    roles = [r for r in resources.values() if r["Type"] == "AWS::IAM::Role"]
    assert len(roles) == 2
    allows = [s for role in roles for p in role["Properties"]["Policies"] for s in _statements(p["PolicyDocument"])]
    assert len(allows) >= 10
    for statement in allows:
        actions = _as_list(statement["Action"])
        assert statement["Effect"] == "Allow"
        assert not any(a == "*" or a.endswith(":*") for a in actions), statement
        if "*" in _as_list(statement["Resource"]):
            assert actions in (["ecr:GetAuthorizationToken"], ["cloudwatch:PutMetricData"]), statement
    metrics = next(s for s in allows if s["Action"] == "cloudwatch:PutMetricData")
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}}
    by_sid = {s["Sid"]: s for s in allows}
    assert by_sid["ObjectsUnderKeyPrefix"]["Resource"] == {"Fn::Sub": "${Bucket.Arn}/${KeyPrefix}/*"}
    assert by_sid["ListKeyPrefix"]["Condition"]["StringLike"]["s3:prefix"][1] == {"Fn::Sub": "${KeyPrefix}/*"}
    assert by_sid["PullPyTorchTrainingImages"]["Resource"]["Fn::Sub"].endswith(
        ":ecr:${AWS::Region}:${DlcAccountId}:repository/pytorch-training"
    )
    assert by_sid["TrainingLogStreams"]["Resource"]["Fn::Sub"].endswith(":log-group:/aws/sagemaker/TrainingJobs:*")
    pass_role = by_sid["PassOnlyTheExecutionRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": "ExecutionRole.Arn"}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert by_sid["StartTrainingJobs"]["Resource"]["Fn::Sub"].endswith(":training-job/*")


def test_bucket_is_private_encrypted_tls_only_and_expires_what_it_should(template):
    resources = template["Resources"]
    bucket = resources["Bucket"]["Properties"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    encryption = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert encryption["Fn::If"][0] == "UseKms" and encryption["Fn::If"][2] == {"SSEAlgorithm": "AES256"}
    assert bucket["VersioningConfiguration"]["Status"] == {"Fn::If": ["Versioned", "Enabled", "Suspended"]}
    rules = bucket["LifecycleConfiguration"]["Rules"]
    packages = rules[0]["Fn::If"][1]
    assert packages["Prefix"] == {"Fn::Sub": "${KeyPrefix}/packages/"}
    assert packages["ExpirationInDays"] == {"Ref": "PackageRetentionDays"}
    assert rules[1]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    deny = resources["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert resources["TrainingLogGroup"]["Condition"] == "CreatesLogGroup"
    assert set(template["Outputs"]) == set(infra.ALL_OUTPUTS)
    assert tuple(template["Parameters"]) == infra.PARAMETERS
    assert template["Parameters"]["LogRetentionDays"]["AllowedValues"] == list(infra.LOG_RETENTION_DAYS)


def test_dlc_account_comes_from_the_sdk_tables_for_the_region():
    assert infra.dlc_account("us-east-1") == "763104351884"
    assert infra.dlc_account("ap-east-1") == "871362719292"  # one of the regions with its own registry
    assert infra.dlc_account("xx-nowhere-1") == infra.DEFAULT_DLC_ACCOUNT


# -- deploy / status / update / destroy on moto --------------------------------------------


def _with_outputs(real: Account, stack: Stack | None) -> Stack | None:
    """What CloudFormation would answer: the template's Outputs, read from the resources moto made."""
    if stack is None or stack.outputs or not stack.status.endswith("_COMPLETE") or stack.status.startswith("DELETE"):
        return stack
    cfn = real.aws.client("cloudformation")
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.list_stack_resources(StackName=stack.stack_id)["StackResourceSummaries"]
    }
    iam = real.aws.client("iam")
    outputs = {
        "BucketName": physical["Bucket"],
        "ExecutionRoleArn": iam.get_role(RoleName=physical["ExecutionRole"])["Role"]["Arn"],
        "SchedulerRoleArn": iam.get_role(RoleName=physical["SchedulerRole"])["Role"]["Arn"],
        "Region": real.region,
        "Prefix": stack.parameters["KeyPrefix"],
        "LogGroup": "/aws/sagemaker/TrainingJobs",
    }
    return replace(stack, outputs=outputs)


@pytest.fixture
def moto_account(aws, monkeypatch):
    """dl's Account on moto, with CloudFormation's Outputs filled in (see the module docstring)."""
    real = Account(Aws(REGION))
    seam = Mock(spec=Account, wraps=real)
    seam.region, seam.aws = real.region, real.aws
    seam.stack.side_effect = lambda name: _with_outputs(real, real.stack(name))
    monkeypatch.setattr(account_mod, "connect", lambda region, profile=None: seam)
    for var in ("DL_BUCKET", "DL_ROLE_ARN"):  # the aws fixture's own bucket and role: not the stack's
        monkeypatch.delenv(var)
    return seam


def _document(answer: dict) -> dict:
    """moto returns a CloudFormation-made inline policy as a Python repr, not JSON."""
    document = answer["PolicyDocument"]
    return ast.literal_eval(document) if isinstance(document, str) else document


def _toml(path: Path = Path("dl.toml")) -> dict:
    import tomllib

    return tomllib.loads(path.read_text())


def test_deploy_creates_the_stack_and_writes_what_launch_needs(moto_account, aws):
    result = invoke("infra", "deploy", "--yes")
    assert result.exit_code == 0, result.output
    out = result.stdout
    added = [("Bucket", "AWS::S3::Bucket"), ("ExecutionRole", "AWS::IAM::Role"),
             ("SchedulerRole", "AWS::IAM::Role"), ("TrainingLogGroup", "AWS::Logs::LogGroup")]  # fmt: skip
    for logical_id, kind in added:
        assert any(line.split()[:3] == ["Add", logical_id, kind] for line in out.splitlines()), out
    assert "CREATE_COMPLETE" in out and "Stack dl is CREATE_COMPLETE." in out
    written = _toml()
    assert written["aws"] == {
        "bucket": STACK_BUCKET,
        "role_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/{EXECUTION_ROLE}",
        "scheduler_role_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/{SCHEDULER_ROLE}",
        "region": REGION,
        "prefix": "dl",
        "stack_name": "dl",
    }
    assert written["defaults"] == {"target": "sagemaker"}
    settings = config.load_settings()
    config.require(settings, "region", "bucket", "role_arn", purpose="the sagemaker target")  # launch's own check
    assert settings.target == "sagemaker"
    # What moto really made.
    s3, iam, logs = aws.client("s3"), aws.client("iam"), aws.client("logs")
    rule = s3.get_bucket_encryption(Bucket=STACK_BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    trust = iam.get_role(RoleName=EXECUTION_ROLE)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    policy = _document(iam.get_role_policy(RoleName=SCHEDULER_ROLE, PolicyName="dl-start-training"))
    assert policy["Statement"][1]["Resource"] == f"arn:aws:iam::{ACCOUNT_ID}:role/{EXECUTION_ROLE}"
    policy = _document(iam.get_role_policy(RoleName=EXECUTION_ROLE, PolicyName="dl-training"))
    assert policy["Statement"][0]["Resource"] == f"arn:aws:s3:::{STACK_BUCKET}/dl/*"
    group = logs.describe_log_groups(logGroupNamePrefix="/aws/sagemaker/TrainingJobs")["logGroups"][0]
    assert group["retentionInDays"] == 30

    again = invoke("infra", "deploy", "--yes")
    assert again.exit_code == 0, again.output
    assert "Stack dl is up to date." in again.stdout and "Add" not in again.stdout


@pytest.mark.parametrize("answer", ["n\n", ""], ids=["no", "end-of-input"])
def test_deploy_shows_the_changes_and_changes_nothing_when_declined(moto_account, aws, answer):
    result = CliRunner().invoke(app, ["infra", "deploy"], input=answer)
    assert result.exit_code == 1, result.output
    assert "Create stack dl in us-east-1:" in result.stdout and "Deploy these changes? [y/N]" in result.stdout
    assert "Nothing changed." in result.stdout
    assert infra.status(moto_account, "dl") is None  # not even the empty REVIEW_IN_PROGRESS stack
    cfn = aws.client("cloudformation")
    assert [s["StackStatus"] for s in cfn.list_stacks()["StackSummaries"] if s["StackName"] == "dl"] in (
        [],
        ["DELETE_COMPLETE"],
    )
    assert STACK_BUCKET not in [b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]]
    assert not Path("dl.toml").exists()


def test_deploy_leaves_an_existing_training_log_group_alone(moto_account, aws):
    aws.client("logs").create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    result = invoke("infra", "deploy", "--yes")
    assert result.exit_code == 0, result.output
    assert "Log group /aws/sagemaker/TrainingJobs exists already" in result.stdout
    stack = infra.status(moto_account, "dl")
    assert stack.parameters["CreateLogGroup"] == "false"
    # moto's change set lists the group regardless of its Condition, but creates only what it should.
    made = aws.client("cloudformation").list_stack_resources(StackName="dl")["StackResourceSummaries"]
    assert "TrainingLogGroup" not in {r["LogicalResourceId"] for r in made}
    assert {"Bucket", "ExecutionRole", "SchedulerRole"} <= {r["LogicalResourceId"] for r in made}


def _create_with_create_stack(aws, **parameters: str) -> None:
    """A stack moto gives Outputs to (CreateStack rather than a change set)."""
    given = {"NamePrefix": "dl", "CreateLogGroup": "true", "DlcAccountId": "763104351884", **parameters}
    aws.client("cloudformation").create_stack(
        StackName="dl",
        TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()],
    )


def test_update_changes_only_what_is_asked_and_keeps_the_rest(aws, monkeypatch):
    for var in ("DL_BUCKET", "DL_ROLE_ARN"):
        monkeypatch.delenv(var)
    _create_with_create_stack(aws, PackageRetentionDays="30")
    result = invoke("infra", "deploy", "--yes", "--versioning", "--log-days", "90")
    assert result.exit_code == 0, result.output
    assert "Update stack dl in us-east-1:" in result.stdout and "UPDATE_COMPLETE" in result.stdout
    stack = aws.client("cloudformation").describe_stacks(StackName="dl")["Stacks"][0]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert parameters["Versioning"] == "Enabled" and parameters["LogRetentionDays"] == "90"
    assert parameters["PackageRetentionDays"] == "30"  # not given: kept, not reset to the default
    assert _toml()["aws"]["bucket"] == STACK_BUCKET  # from moto's own Outputs

    status = invoke("infra", "status", "--json")
    assert status.exit_code == 0, status.output
    shown = json.loads(status.stdout)
    assert shown["status"] == "UPDATE_COMPLETE" and shown["outputs"]["BucketName"] == STACK_BUCKET
    assert shown["settings_drift"] == []


def test_status_shows_outputs_and_settings_that_differ(aws, monkeypatch):
    _create_with_create_stack(aws)
    result = invoke("infra", "status")  # DL_BUCKET still names the aws fixture's bucket
    assert result.exit_code == 0, result.output
    assert "Status      CREATE_COMPLETE" in result.stdout
    assert f"BucketName         {STACK_BUCKET}" in result.stdout
    assert "aws.bucket is 'dl-test-bucket' (from DL_BUCKET)" in result.stdout

    missing = invoke("infra", "status", "--stack-name", "other")
    assert missing.exit_code == 1
    assert "No stack 'other' in us-east-1. Create it: `dl infra deploy --region us-east-1`." in missing.stderr


def test_destroy_empties_the_bucket_deletes_the_stack_and_forgets_its_settings(moto_account, aws):
    assert invoke("infra", "deploy", "--yes").exit_code == 0
    Path("dl.toml").write_text(Path("dl.toml").read_text() + '\n[tags]\nteam = "vision"\n')
    s3 = aws.client("s3")
    for key in ("dl/packages/abc/sourcedir.tar.gz", "dl/runs/r1/checkpoints/last.ckpt", "elsewhere.txt"):
        s3.put_object(Bucket=STACK_BUCKET, Key=key, Body=b"x" * 100)

    declined = CliRunner().invoke(app, ["infra", "destroy"], input="n\n")
    assert declined.exit_code == 1 and "Nothing deleted." in declined.stdout
    assert f"s3://{STACK_BUCKET}  3 objects (300 B)" in declined.stdout
    assert s3.list_objects_v2(Bucket=STACK_BUCKET)["KeyCount"] == 3

    result = invoke("infra", "destroy", "--yes")
    assert result.exit_code == 0, result.output
    assert f"deleted 3 objects from s3://{STACK_BUCKET}" in result.stdout
    assert "Stack dl is deleted." in result.stdout
    assert STACK_BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert {EXECUTION_ROLE, SCHEDULER_ROLE}.isdisjoint(r["RoleName"] for r in aws.client("iam").list_roles()["Roles"])
    left = _toml()
    assert left["aws"] == {"region": REGION, "prefix": "dl"} and left["tags"] == {"team": "vision"}
    assert "target" not in left.get("defaults", {})
    assert invoke("infra", "destroy", "--yes").stdout.startswith("No stack 'dl' in us-east-1: nothing to delete.")


# -- failures: CloudFormation's event sequence through the Account seam -----------------------


def _event(n: int, logical_id: str, kind: str, status: str, reason: str = "") -> StackEvent:
    return StackEvent(f"e{n}", datetime(2026, 11, 25, 12, 0, n, tzinfo=UTC), logical_id, kind, status, reason)


def test_a_failed_deploy_names_the_first_failing_resource_and_its_reason(aws, monkeypatch):
    """moto cannot fail a change set's execution; this is the sequence CloudFormation records
    when a role name is taken (newest first, as DescribeStackEvents returns them)."""
    stack_id = f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/dl/1"
    review = Stack("dl", stack_id, "REVIEW_IN_PROGRESS")
    history = [
        _event(9, "dl", "AWS::CloudFormation::Stack", "ROLLBACK_COMPLETE"),
        _event(6, "Bucket", "AWS::S3::Bucket", "CREATE_FAILED", "Resource creation cancelled"),
        _event(
            5,
            "ExecutionRole",
            "AWS::IAM::Role",
            "CREATE_FAILED",
            f"{EXECUTION_ROLE} already exists in stack arn:aws:cloudformation:us-east-1:1:stack/old",
        ),  # fmt: skip
        _event(3, "Bucket", "AWS::S3::Bucket", "CREATE_IN_PROGRESS"),
        _event(2, "dl", "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", "User Initiated"),
        _event(1, "dl", "AWS::CloudFormation::Stack", "REVIEW_IN_PROGRESS", "User Initiated"),
    ]
    fake = Mock(spec=Account)
    fake.region = REGION
    fake.log_group_exists.return_value = False
    fake.create_change_set.return_value = "cs-1"
    fake.change_set.return_value = ChangeSet(
        "cs-1", "CREATE_COMPLETE", "", (Change("Add", "Bucket", "AWS::S3::Bucket"),)
    )
    stacks = iter([None, review, Stack("dl", stack_id, "ROLLBACK_COMPLETE", "The following resource(s) failed")])
    fake.stack.side_effect = lambda name: next(stacks)
    fake.newest_event_id.return_value = "e1"  # before execution: REVIEW_IN_PROGRESS only

    def events(stack, stop_at=None):
        out = []
        for event in history:
            if stop_at and stop_at(event):
                break
            out.append(event)
        return out

    fake.stack_events.side_effect = events
    monkeypatch.setattr(account_mod, "connect", lambda region, profile=None: fake)
    result = invoke("infra", "deploy", "--yes")
    assert result.exit_code == 1
    fake.execute_change_set.assert_called_once_with("cs-1")
    assert result.stderr.strip() == (
        f"Error: Deploying stack dl failed: ExecutionRole (AWS::IAM::Role) CREATE_FAILED: {EXECUTION_ROLE} already "
        "exists in stack arn:aws:cloudformation:us-east-1:1:stack/old. Fix that, delete the failed stack with "
        "`dl infra destroy`, then deploy again."
    )
    progress = [line.split()[1:3] for line in result.stdout.splitlines() if line.startswith("  12:00:")]
    assert progress[0] == ["CREATE_IN_PROGRESS", "dl"] and progress[-1] == ["ROLLBACK_COMPLETE", "dl"]
    assert len(progress) == 5  # each event once, oldest first; REVIEW_IN_PROGRESS came before execution
    assert not Path("dl.toml").exists()


def test_first_failure_skips_cancellations_and_the_stack_itself():
    events = [
        _event(1, "dl", "AWS::CloudFormation::Stack", "UPDATE_FAILED", "x"),
        _event(2, "Bucket", "AWS::S3::Bucket", "UPDATE_FAILED", "Resource update cancelled"),
        _event(3, "SchedulerRole", "AWS::IAM::Role", "UPDATE_FAILED", "AccessDenied: iam:PutRolePolicy"),
    ]
    assert infra.first_failure(events).logical_id == "SchedulerRole"
    assert infra.first_failure(events[:2]).logical_id == "dl"  # only cancellations: the first failure
    assert infra.first_failure([]) is None


def test_a_stack_whose_creation_failed_must_be_destroyed_first(aws, monkeypatch):
    fake = Mock(spec=Account)
    fake.region = REGION
    fake.stack.return_value = Stack("dl", "id", "ROLLBACK_COMPLETE")
    monkeypatch.setattr(account_mod, "connect", lambda region, profile=None: fake)
    result = invoke("infra", "deploy", "--yes")
    assert result.exit_code == 1
    assert "ROLLBACK_COMPLETE" in result.stderr and "dl infra destroy" in result.stderr
    fake.create_change_set.assert_not_called()


def test_deploy_needs_a_region_and_a_usable_stack_name(aws, monkeypatch):
    for var in ("DL_REGION", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    result = invoke("infra", "deploy", "--yes")
    assert result.exit_code == 2 and "No AWS region configured for dl infra" in result.stderr
    result = invoke("infra", "deploy", "--yes", "--region", REGION, "--stack-name", "Way-Too-Long-Stack-Name-For-dl")
    assert result.exit_code == 2 and "cannot start resource names" in result.stderr


def test_parameter_values_the_template_would_refuse_are_bad_input(aws):
    result = invoke("infra", "deploy", "--yes", "--log-days", "31")
    assert result.exit_code == 2 and "--log-days 31 is not a retention CloudWatch offers" in result.stderr
    result = invoke("infra", "deploy", "--yes", "--kms-key", "alias/mine")
    assert result.exit_code == 2 and "is not a KMS key ARN" in result.stderr
    assert infra.status(Account(Aws(REGION)), "dl") is None
