"""`dl doctor`: is this machine and this AWS account ready to train, and if not, what to do.

Each check is a small function that returns a :class:`Check` (plain data: a status, one line,
a fix). :func:`run` runs them in order; a check whose prerequisite failed (no region, no
credentials) is skipped rather than failing again. Nothing here costs money or changes
anything: it reads STS, CloudFormation, S3, IAM and Service Quotas, and imports torch in a
child process with a timeout, so a broken CUDA install cannot hang it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata

from orchestrator import __version__, catalog, config, infra
from orchestrator.backends.sagemaker.account import Account, Identity, Stack
from orchestrator.errors import DlError

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
MIN_PYTHON = (3, 11)
LOCAL_TIMEOUT_S = 120.0
_PACKAGES = ("boto3", "botocore", "typer", "click", "torch", "lightning")
_TRAIN_EXTRA = "pip install -e '.[train]'"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    line: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        """Only a failure fails doctor; a warning or a skipped check does not."""
        return self.status != FAIL

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


# -- this machine --------------------------------------------------------------------------


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    shown = ".".join(map(str, version))
    if version[:2] < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return Check("python", FAIL, f"Python {shown} is too old for dl", f"Use Python {need} or newer.")
    return Check("python", OK, f"Python {shown} ({sys.executable})")


def check_packages() -> Check:
    """Versions from the installed metadata (nothing is imported)."""
    found, missing = [f"dl {__version__}"], []
    for name in _PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    line = ", ".join(found) + (f"; not installed: {', '.join(missing)}" if missing else "")
    if "boto3" in missing or "botocore" in missing:
        return Check(
            "packages", FAIL, line, "The AWS checks and the sagemaker target need boto3: pip install -e '.[aws]'."
        )
    return Check("packages", OK, line)


class LocalProbe:
    """Imports torch and lightning in a child process, started early so it runs while the AWS
    checks wait on the network; :meth:`result` collects it (with a timeout)."""

    _CODE = (
        "import json, time; t = time.monotonic(); import torch, lightning; "
        "n = torch.cuda.device_count() if torch.cuda.is_available() else 0; "
        "print(json.dumps({'torch': torch.__version__, 'lightning': lightning.__version__, 'cuda': n, "
        "'names': [torch.cuda.get_device_name(i) for i in range(n)], 'seconds': time.monotonic() - t}))"
    )

    def __init__(self, python: str = sys.executable, timeout: float = LOCAL_TIMEOUT_S) -> None:
        self.timeout = timeout
        self._proc = subprocess.Popen(
            [python, "-c", self._CODE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def close(self) -> None:
        """Stop the child if it is still running (doctor was interrupted)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()

    def result(self, target: str = "local") -> Check:
        """``target``: the default target; without torch, a local default fails, a cloud one warns."""
        try:
            out, err = self._proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            return Check(
                "local",
                FAIL,
                f"Importing torch did not finish in {self.timeout:g}s",
                "A broken CUDA driver or install can hang it: try `python -c 'import torch'`; reinstall torch.",
            )
        if self._proc.returncode != 0:
            last = (err.strip().splitlines() or ["no output"])[-1]
            status = FAIL if target == "local" else WARN
            return Check(
                "local", status, f"torch and lightning do not import ({last})", f"For local runs: {_TRAIN_EXTRA}."
            )
        try:
            info = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return Check("local", FAIL, f"Could not read the torch probe's answer: {out.strip()[:200]!r}", "")
        gpus = (
            f"{info['cuda']} CUDA GPU{'s' if info['cuda'] > 1 else ''} ({', '.join(dict.fromkeys(info['names']))})"
            if info["cuda"]
            else "no CUDA GPU visible (local runs use the CPU)"
        )
        return Check(
            "local",
            OK,
            f"torch {info['torch']} and lightning {info['lightning']} import ({info['seconds']:.1f}s); {gpus}",
        )


# -- settings and AWS ----------------------------------------------------------------------


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


# -- all of them ---------------------------------------------------------------------------


def run(
    gpu: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    local: bool = True,
    account: Account | None = None,
) -> list[Check]:
    """Every check, in order. ``account`` replaces the AWS connection (tests); ``local=False``
    skips importing torch. An unknown ``gpu`` is a UsageError before anything runs."""
    if gpu:
        catalog.choose(gpu)
    probe = LocalProbe() if local else None
    try:
        checks = [check_python(), check_packages()]
        try:
            settings = config.load_settings(cli={"region": region, "profile": profile})
        except DlError as exc:
            checks.append(Check("config", FAIL, exc.message, exc.hint))
            settings = None
        else:
            where = f"Settings from {settings.config_path}" if settings.config_path else "No dl.toml here or above"
            checks.append(Check("config", OK, f"{where}; target {settings.target}"))
        checks += _aws_checks(settings, gpu, account) if settings else [_skip(n, "settings") for n in _AWS]
        if probe:
            checks.append(probe.result(settings.target if settings else "local"))
        return checks
    finally:
        if probe:
            probe.close()


_AWS = ("region", "credentials", "stack", "bucket", "role", "quota")


def _skip(name: str, because: str) -> Check:
    return Check(name, SKIP, f"Not checked: needs {because}")


def _aws_checks(settings: config.Settings, gpu: str | None, account: Account | None) -> list[Check]:
    region = check_region(settings)
    if region.status == FAIL:
        return [region] + [_skip(name, "a region") for name in _AWS[1:]]
    try:
        account = account or infra.connect(settings.region, settings.profile)
        who = account.identity()
    except DlError as exc:
        fail = Check("credentials", FAIL, exc.message, exc.hint)
        return [region, fail] + [_skip(name, "AWS credentials") for name in _AWS[2:]]
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


def exit_code(checks: list[Check]) -> int:
    return 0 if all(check.ok for check in checks) else 1
