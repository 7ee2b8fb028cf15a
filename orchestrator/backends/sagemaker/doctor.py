"""The sagemaker backend's part of `dl doctor`: region, credentials, stack, bucket, role, GPU quota.

Reads STS, CloudFormation, S3, IAM and Service Quotas through
:class:`~orchestrator.backends.sagemaker.account.Account`; costs nothing and changes nothing.
A check whose prerequisite failed (no region, no credentials) is skipped.
"""

from __future__ import annotations

from orchestrator import config
from orchestrator.backends.sagemaker import catalog, infra
from orchestrator.backends.sagemaker.account import Account, Identity, Stack
from orchestrator.doctor import FAIL, OK, WARN, Check, skip
from orchestrator.errors import DlError


def check_region(settings: config.Settings) -> Check:
    if not settings.region:
        return Check(
            "region",
            FAIL,
            "No AWS region configured",
            "Set one: `dl config set aws.region us-east-1`, DL_REGION, or `dl infra deploy --region REGION`.",
        )
    known = catalog.load().regions
    note = "" if settings.region in known else "; dl has no price estimates for it"
    return Check(
        "region", OK if not note else WARN, f"Region {settings.region} (from {settings.sources['region']}){note}"
    )


def check_credentials(who: Identity, settings: config.Settings) -> Check:
    """Whose credentials these are (STS); never their values."""
    return Check("credentials", OK, f"AWS credentials for {who.arn} from {config.credentials_source(settings)}")


def check_stack(stack: Stack | None, settings: config.Settings, region: str) -> Check:
    name = settings.stack_name
    if stack is None:
        if settings.bucket and settings.role_arn:
            return Check(
                "stack",
                WARN,
                f"No stack {name!r} in {region}; dl uses aws.bucket and aws.role_arn as configured",
                "Fine if you manage them yourself; `dl infra deploy` creates a least-privilege set.",
            )
        return Check(
            "stack",
            FAIL,
            f"No stack {name!r} in {region}",
            f"Run `dl infra deploy --region {region}` (or, if you deployed in another region, set aws.region to it).",
        )
    if stack.status == "REVIEW_IN_PROGRESS" or stack.status.endswith("_FAILED") or stack.status == "ROLLBACK_COMPLETE":
        return Check(
            "stack",
            FAIL,
            f"Stack {name!r} is {stack.status}" + (f": {stack.reason}" if stack.reason else ""),
            "Run `dl infra deploy` (after `dl infra destroy` if its creation failed).",
        )
    missing = [key for key in infra.OUTPUTS if not stack.outputs.get(key)]
    if missing:
        return Check(
            "stack",
            FAIL,
            f"Stack {name!r} has no output {', '.join(missing)}: it was not made from dl's template",
            "Pick another stack with aws.stack_name, or deploy dl's with `dl infra deploy --stack-name NAME`.",
        )
    drift = infra.settings_drift(stack, settings)
    if drift:
        return Check(
            "stack",
            WARN,
            f"Stack {name!r} is {stack.status}, but {'; '.join(drift)}, not the stack's",
            "`dl infra deploy` writes the stack's outputs into dl.toml (a DL_* variable still overrides them).",
        )
    if stack.status.endswith("_IN_PROGRESS") or stack.status == "UPDATE_ROLLBACK_COMPLETE":
        return Check("stack", WARN, f"Stack {name!r} is {stack.status}", "See `dl infra status`.")
    return Check("stack", OK, f"Stack {name!r} is {stack.status}; dl's settings match its outputs")


def check_bucket(account: Account, settings: config.Settings) -> Check:
    bucket, region = settings.bucket, settings.region
    if not bucket:
        return Check("bucket", FAIL, "No S3 bucket configured", "Run `dl infra deploy`, or set aws.bucket / DL_BUCKET.")
    where = account.bucket_region(bucket)
    if where is None:
        return Check(
            "bucket",
            FAIL,
            f"Bucket {bucket} does not exist (aws.bucket from {settings.sources['bucket']})",
            "Run `dl infra deploy` to create one, or correct aws.bucket.",
        )
    if where != region:
        return Check(
            "bucket",
            FAIL,
            f"Bucket {bucket} is in {where}, but dl is set to {region}: SageMaker needs them in one region",
            f"Use region {where} (`dl config set aws.region {where}`), or a bucket in {region} (`dl infra deploy`).",
        )
    prefix = settings.prefix.strip("/") + "/" if settings.prefix else ""
    account.can_list(bucket, prefix)
    return Check("bucket", OK, f"Bucket s3://{bucket}/{prefix} is reachable, in {where}")


def check_role(account: Account, settings: config.Settings, caller_account: str | None) -> Check:
    arn = settings.role_arn
    if not arn:
        return Check(
            "role", FAIL, "No SageMaker execution role configured", "Run `dl infra deploy`, or set aws.role_arn."
        )
    role_account = arn.split(":")[4]
    if caller_account and role_account != caller_account:
        return Check(
            "role",
            FAIL,
            f"Role {arn} belongs to account {role_account}, but these credentials are for {caller_account}",
            "Use the profile of the role's account, or that account's role (`dl infra deploy`).",
        )
    name = arn.rsplit("/", 1)[-1]
    role = account.role(name)
    if role is None:
        return Check(
            "role",
            FAIL,
            f"Role {name} does not exist (aws.role_arn from {settings.sources['role_arn']})",
            "Run `dl infra deploy` to create it, or correct aws.role_arn.",
        )
    if "sagemaker.amazonaws.com" not in role.trusted_services:
        trusted = ", ".join(role.trusted_services) or "no service"
        return Check(
            "role",
            FAIL,
            f"Role {name} trusts {trusted}, not sagemaker.amazonaws.com: SageMaker cannot assume it",
            "Add sagemaker.amazonaws.com to its trust policy (`aws iam update-assume-role-policy`), "
            "or use the role `dl infra deploy` creates.",
        )
    return Check("role", OK, f"Role {name} exists and trusts sagemaker.amazonaws.com")


def quota_name(instance_type: str, spot: bool) -> str:
    """Service Quotas' name for SageMaker training on ``instance_type``."""
    return f"{instance_type} for {'spot ' if spot else ''}training job usage"


def check_quota(account: Account, settings: config.Settings, gpu: str | None) -> Check:
    """The Service Quotas limit on instances of the chosen type in training jobs (spot when dl
    launches spot). New accounts have 0 for most GPU types."""
    if gpu:
        instance = catalog.choose(gpu)
    else:
        instance = catalog.choose(
            settings.gpu or (None if settings.instance_type else catalog.ANY_GPU), settings.instance_type
        )
    name = quota_name(instance.type, settings.spot)
    try:
        quota = account.quota("sagemaker", name)
    except DlError as exc:
        return Check("quota", WARN, f"Could not read the quota '{name}' ({exc.message})", exc.hint)
    if quota is None:
        return Check(
            "quota",
            WARN,
            f"Service Quotas has no quota '{name}' in {account.region}",
            f"The type may not exist in {account.region}: see `dl gpus` and pick another --gpu.",
        )
    value = int(quota.value) if quota.value == int(quota.value) else quota.value
    if quota.value < 1:
        request = (
            f"aws service-quotas request-service-quota-increase --region {account.region} "
            f"--service-code sagemaker --quota-code {quota.code} --desired-value 1"
        )
        return Check(
            "quota",
            FAIL,
            f"Quota '{name}' is {value} in {account.region}: a job on {instance.type} would be refused "
            "(new accounts start at 0 for most GPU types)",
            f"Request an increase (often approved within a day): {request}; "
            "or in the console: Service Quotas > Amazon SageMaker. Or pick another --gpu.",
        )
    where = "" if quota.applied else " (AWS default)"
    return Check("quota", OK, f"Quota '{name}' is {value}{where} in {account.region}")


_AWS = ("region", "credentials", "stack", "bucket", "role", "quota")


def aws_checks(settings: config.Settings | None, gpu: str | None = None, account: Account | None = None) -> list[Check]:
    """The AWS checks in order; ``settings`` None (they could not be read): all skipped.
    ``account`` replaces the AWS connection (tests); an unknown ``gpu`` is a UsageError first."""
    if gpu:
        catalog.choose(gpu)
    if settings is None:
        return [skip(name, "settings") for name in _AWS]
    region = check_region(settings)
    if region.status == FAIL:
        return [region] + [skip(name, "a region") for name in _AWS[1:]]
    try:
        account = account or infra.connect(settings.region, settings.profile)
        who = account.identity()
    except DlError as exc:
        fail = Check("credentials", FAIL, exc.message, exc.hint)
        return [region, fail] + [skip(name, "AWS credentials") for name in _AWS[2:]]
    checks = [region, check_credentials(who, settings)]
    try:
        stack = account.stack(settings.stack_name)
        checks.append(check_stack(stack, settings, account.region))
    except DlError as exc:
        checks.append(Check("stack", FAIL, exc.message, exc.hint))
    for name, check in (
        ("bucket", lambda: check_bucket(account, settings)),
        ("role", lambda: check_role(account, settings, who.account)),
        ("quota", lambda: check_quota(account, settings, gpu)),
    ):
        try:
            checks.append(check())
        except DlError as exc:
            checks.append(Check(name, FAIL, exc.message, exc.hint))
    return checks
