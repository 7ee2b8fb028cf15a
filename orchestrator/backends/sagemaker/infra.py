"""dl's AWS resources as one CloudFormation stack: plan, apply, read, destroy.

The template is ``infra/dl.yaml`` (see ``infra/README.md``). A deploy is always a change set:
:func:`plan` creates one and says what it would change (None when nothing would), the caller
shows it and asks, :func:`apply` executes it and follows the stack's events to a terminal
status, and :func:`save` writes the stack's outputs into dl.toml, after which
``dl launch --gpu`` needs no other setup. :func:`destroy` empties the bucket and deletes
the stack. Every AWS call goes through :class:`~orchestrator.backends.sagemaker.account.Account`.

Promises: a plan that is not applied is discarded with :func:`discard` and leaves no trace
(not even the empty stack that a CREATE change set makes). A failed apply raises
:class:`InfraError` naming the first resource that failed and CloudFormation's reason.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from orchestrator import config
from orchestrator.backends.sagemaker import account as aws_account
from orchestrator.backends.sagemaker.account import Account, Change, Stack, StackEvent
from orchestrator.backends.sagemaker.request import LOG_GROUP
from orchestrator.errors import BackendError, UsageError

# What dl reads from the stack: output → (dl.toml section, key).
OUTPUTS: dict[str, tuple[str, str]] = {
    "BucketName": ("aws", "bucket"),
    "ExecutionRoleArn": ("aws", "role_arn"),
    "SchedulerRoleArn": ("aws", "scheduler_role_arn"),
    "Region": ("aws", "region"),
    "Prefix": ("aws", "prefix"),
}
ALL_OUTPUTS = (*OUTPUTS, "LogGroup")
PARAMETERS = ("NamePrefix", "KeyPrefix", "PackageRetentionDays", "Versioning", "KmsKeyArn", "CreateLogGroup",
              "LogRetentionDays", "DlcAccountId")  # fmt: skip
DEFAULT_DLC_ACCOUNT = "763104351884"
# CloudWatch Logs' retention choices (the template's AllowedValues for LogRetentionDays).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
                      3288, 3653)  # fmt: skip
_KMS_KEY = r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[a-f0-9-]+"
# Stack statuses an update cannot start from: (what happened, what to do).
_STUCK = {
    "ROLLBACK_COMPLETE": ("its creation failed", "Delete it with `dl infra destroy`, then deploy again."),
    "ROLLBACK_FAILED": ("its creation failed and so did the cleanup", "Delete it with `dl infra destroy`."),
    "DELETE_FAILED": ("an earlier deletion failed", "Run `dl infra destroy` again (it says what blocks it)."),
    "UPDATE_ROLLBACK_FAILED": (
        "an update failed and so did its rollback",
        "Fix the cause, then `aws cloudformation continue-update-rollback --stack-name NAME`.",
    ),
}
_OK = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"}
_POLL_S = 3.0


class InfraError(BackendError):
    """A stack operation that failed; the message names the resource and CloudFormation's reason."""


def template_path() -> Path:
    """``infra/dl.yaml`` beside the package in a clone or editable install; else a copy shipped
    in ``orchestrator/data`` (when the wheel was built to include one)."""
    import orchestrator

    beside = Path(orchestrator.__file__).resolve().parent.parent / "infra" / "dl.yaml"
    if beside.is_file():
        return beside
    shipped = resources.files("orchestrator.data").joinpath("dl.yaml")
    if shipped.is_file():
        return Path(str(shipped))
    raise BackendError(
        "dl's CloudFormation template (infra/dl.yaml) is not installed here.",
        "Install dl from a clone: pip install -e '.[aws]'.",
    )


def connect(region: str | None, profile: str | None = None) -> Account:
    return aws_account.connect(region, profile)


def name_prefix(stack_name: str) -> str:
    """Resource names start with the stack's name, lowercased (bucket names are lowercase)."""
    prefix = stack_name.lower()
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,19}", prefix):
        raise UsageError(
            f"Stack name {stack_name!r} cannot start resource names (bucket, roles).",
            "Use at most 20 letters, digits and hyphens, starting with a letter, e.g. --stack-name dl.",
        )
    return prefix


def dlc_account(region: str) -> str:
    """The account that publishes AWS's PyTorch training images in ``region``, from dl's image table
    (images.py); 763104351884, where most regions have them, for a region the table does not know."""
    from orchestrator.backends.sagemaker.images import registry_account

    return registry_account(region) or DEFAULT_DLC_ACCOUNT


# -- deploy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """Template parameters a user may set; None keeps the stack's current value (or the default)."""

    versioning: bool | None = None
    package_days: int | None = None
    log_days: int | None = None
    kms_key_arn: str | None = None

    def __post_init__(self) -> None:
        """A value the template would refuse is a UsageError here, before any AWS call."""
        if self.log_days is not None and self.log_days not in LOG_RETENTION_DAYS:
            raise UsageError(
                f"--log-days {self.log_days} is not a retention CloudWatch offers.",
                f"Use one of {', '.join(map(str, LOG_RETENTION_DAYS))}.",
            )
        if self.package_days is not None and not 0 <= self.package_days <= 3650:
            raise UsageError(f"--package-days {self.package_days} is out of range.", "Use 0 (keep) to 3650.")
        if self.kms_key_arn and not re.fullmatch(_KMS_KEY, self.kms_key_arn):
            raise UsageError(f"--kms-key {self.kms_key_arn!r} is not a KMS key ARN.", 'Give its ARN ("" for SSE-S3).')

    def parameters(self) -> dict[str, str]:
        given = {
            "Versioning": None if self.versioning is None else ("Enabled" if self.versioning else "Disabled"),
            "PackageRetentionDays": None if self.package_days is None else str(self.package_days),
            "LogRetentionDays": None if self.log_days is None else str(self.log_days),
            "KmsKeyArn": self.kms_key_arn,
        }
        return {key: value for key, value in given.items() if value is not None}


@dataclass(frozen=True)
class Plan:
    """A change set waiting to be executed (or discarded)."""

    stack_name: str
    region: str
    kind: str  # CREATE | UPDATE
    change_set_id: str
    changes: tuple[Change, ...]
    parameters: dict[str, str]  # the values given explicitly; the rest keep theirs
    notes: tuple[str, ...] = field(default=())


def plan(account: Account, stack_name: str, prefix: str | None = None, options: Options | None = None) -> Plan | None:
    """Create a change set that brings stack ``stack_name`` to dl's template; None when the
    stack is already there and nothing would change. ``prefix`` (aws.prefix) sets the key
    prefix; None keeps the stack's (``dl`` for a new one)."""
    options = options or Options()
    current = account.stack(stack_name)
    if current and current.status in _STUCK:
        why, fix = _STUCK[current.status]
        raise InfraError(f"Stack {stack_name} ({account.region}) is {current.status}: {why}.", fix)
    if current and current.status.endswith("_IN_PROGRESS") and current.status != "REVIEW_IN_PROGRESS":
        raise InfraError(f"Stack {stack_name} is busy ({current.status}).", "Wait for it to finish: `dl infra status`.")
    # A stack left in REVIEW_IN_PROGRESS by an unexecuted CREATE change set is created anew.
    kind = "UPDATE" if current and current.status != "REVIEW_IN_PROGRESS" else "CREATE"
    previous = current.parameters if kind == "UPDATE" else {}
    notes: list[str] = []
    given = {**options.parameters(), "DlcAccountId": dlc_account(account.region)}
    if prefix is not None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", prefix):
            raise UsageError(
                f"aws.prefix {prefix!r} cannot be the stack's key prefix.", "Use one folder name, e.g. dl."
            )
        given["KeyPrefix"] = prefix
    if "NamePrefix" not in previous:
        given["NamePrefix"] = name_prefix(stack_name)
    if previous.get("CreateLogGroup") != "true":  # this stack does not own the group (yet)
        exists = account.log_group_exists(LOG_GROUP)
        given["CreateLogGroup"] = "false" if exists else "true"
        if exists:
            notes.append(f"Log group {LOG_GROUP} exists already: the stack leaves it (and its retention) as it is.")
    parameters = [{"ParameterKey": key, "ParameterValue": value} for key, value in given.items()]
    kept = [key for key in PARAMETERS if key in previous and key not in given]  # not ones a new template dropped
    parameters += [{"ParameterKey": key, "UsePreviousValue": True} for key in kept]
    name = f"dl-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    change_set_id = account.create_change_set(
        stack_name, name, template_path().read_text(encoding="utf-8"), parameters, kind, "dl infra deploy"
    )
    if change_set_id is None:
        return None
    change_set = _wait_for_change_set(account, change_set_id)
    if change_set.empty:
        account.delete_change_set(change_set_id)
        return None
    if change_set.status != "CREATE_COMPLETE":
        _discard(account, stack_name, change_set_id, kind)
        raise InfraError(
            f"CloudFormation rejected the change set for stack {stack_name}: {change_set.reason or change_set.status}",
            "Fix that (see `dl infra status`) and deploy again.",
        )
    return Plan(stack_name, account.region, kind, change_set_id, change_set.changes, given, tuple(notes))


def _wait_for_change_set(account: Account, change_set_id: str, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while True:
        change_set = account.change_set(change_set_id)
        if change_set.status not in ("CREATE_PENDING", "CREATE_IN_PROGRESS"):
            return change_set
        if time.monotonic() > deadline:
            raise InfraError(f"The change set was still {change_set.status} after {timeout:.0f}s.", "Try again.")
        time.sleep(1.0)


def discard(account: Account, plan: Plan) -> None:
    """Forget a plan: delete its change set, and the empty stack a CREATE change set makes."""
    _discard(account, plan.stack_name, plan.change_set_id, plan.kind)


def _discard(account: Account, stack_name: str, change_set_id: str, kind: str) -> None:
    account.delete_change_set(change_set_id)
    if kind == "CREATE":
        stack = account.stack(stack_name)
        if stack and stack.status == "REVIEW_IN_PROGRESS":
            account.delete_stack(stack.stack_id)


def apply(
    account: Account,
    plan: Plan,
    on_event: Callable[[StackEvent], None] | None = None,
    timeout: float = 3600.0,
    poll: float = _POLL_S,
) -> Stack:
    """Execute ``plan`` and follow the stack to a terminal status, passing each new event to
    ``on_event`` (oldest first). The stack when it succeeded; InfraError naming the first
    failed resource otherwise."""
    before = account.stack(plan.stack_name)
    stack_id = before.stack_id if before else plan.stack_name
    seen = _newest(account, stack_id) if before else set()
    account.execute_change_set(plan.change_set_id)
    stack, new = _follow(account, stack_id, seen, on_event, timeout, poll)
    if stack is None or stack.status not in _OK:
        raise _failure(plan.stack_name, stack, new)
    missing = [key for key in OUTPUTS if not stack.outputs.get(key)]
    if missing:
        raise InfraError(
            f"Stack {plan.stack_name} is {stack.status} but has no output {', '.join(missing)}.",
            "It was not made from dl's template: pick another --stack-name.",
        )
    return stack


def _newest(account: Account, stack_id: str) -> set[str]:
    newest = account.newest_event_id(stack_id)
    return {newest} if newest else set()


def _follow(account, stack_id, seen, on_event, timeout, poll) -> tuple[Stack | None, list[StackEvent]]:
    """Poll events and status until the stack's status is terminal; (stack, new events). Events
    come newest first, so reading stops at the first one already ``seen``."""
    deadline = time.monotonic() + timeout
    new: list[StackEvent] = []
    while True:
        fresh = account.stack_events(stack_id, stop_at=lambda e: e.event_id in seen)
        for event in reversed(fresh):
            seen.add(event.event_id)
            new.append(event)
            if on_event:
                on_event(event)
        stack = account.stack(stack_id)
        if stack is None or _terminal(stack.status):
            return stack, new
        if time.monotonic() > deadline:
            raise InfraError(
                f"Stack {stack.name} is still {stack.status} after {timeout / 60:.0f} minutes.",
                "CloudFormation goes on without dl: watch it with `dl infra status`.",
            )
        time.sleep(poll)


def _terminal(status: str) -> bool:
    return not status.endswith("_IN_PROGRESS")


def first_failure(events: list[StackEvent]) -> StackEvent | None:
    """The event that explains a failure: the earliest resource that failed for a reason of its
    own (others fail as "Resource creation cancelled" because of it)."""
    failed = [e for e in events if e.status.endswith("_FAILED")]
    own = [e for e in failed if "cancelled" not in e.reason.lower() and e.resource_type != "AWS::CloudFormation::Stack"]
    return (own or failed or [None])[0]


def _failure(stack_name: str, stack: Stack | None, events: list[StackEvent]) -> InfraError:
    status = stack.status if stack else "DELETE_COMPLETE"
    first = first_failure(events)
    if first:
        what = f"{first.logical_id} ({first.resource_type}) {first.status}: {first.reason or 'no reason given'}"
    else:
        what = f"{status}: {(stack.reason if stack else '') or 'no reason given'}"
    hint = (
        "Fix that, delete the failed stack with `dl infra destroy`, then deploy again."
        if status == "ROLLBACK_COMPLETE"
        else f"Fix that and deploy again; the stack is {status} (`dl infra status`)."
    )
    return InfraError(f"Deploying stack {stack_name} failed: {what.rstrip('.')}.", hint)


def save(stack: Stack, path: Path | None = None) -> Path:
    """Write the stack's outputs into dl.toml (aws.bucket, role_arn, scheduler_role_arn, region,
    prefix, stack_name) and make sagemaker the default target; the file's path."""
    updates: dict[str, dict[str, object]] = {"aws": {}, "defaults": {"target": "sagemaker"}}
    for output, (section, key) in OUTPUTS.items():
        updates[section][key] = stack.outputs[output]
    updates["aws"]["stack_name"] = stack.name
    return config.write_settings(updates, path=path)


def settings_drift(stack: Stack, settings: config.Settings) -> list[str]:
    """Settings in effect that disagree with the stack's outputs, as "aws.bucket is X (from Y)"."""
    drift = []
    for output, (section, key) in OUTPUTS.items():
        value = getattr(settings, key)
        if output in stack.outputs and value != stack.outputs[output]:
            drift.append(f"{section}.{key} is {value!r} (from {settings.sources.get(key, 'default')})")
    return drift


# -- status and destroy --------------------------------------------------------------------


def status(account: Account, stack_name: str) -> Stack | None:
    """The stack, or None when there is none in this region."""
    stack = account.stack(stack_name)
    return None if stack is None or stack.status == "DELETE_COMPLETE" else stack


@dataclass(frozen=True)
class Teardown:
    """What destroying a stack will delete."""

    stack: Stack
    bucket: str | None
    objects: int  # versions and delete markers
    bytes: int
    log_group: bool  # the stack created the training log group: its logs go too


def teardown(account: Account, stack_name: str) -> Teardown | None:
    """What :func:`destroy` would delete; None when there is no such stack."""
    stack = status(account, stack_name)
    if stack is None:
        return None
    bucket = stack.outputs.get("BucketName")
    usage = account.bucket_usage(bucket) if bucket else None
    objects, size = usage or (0, 0)
    return Teardown(
        stack, bucket if usage is not None else None, objects, size, stack.parameters.get("CreateLogGroup") == "true"
    )


def destroy(
    account: Account,
    plan: Teardown,
    on_event: Callable[[StackEvent], None] | None = None,
    on_emptied: Callable[[int], None] | None = None,
    timeout: float = 3600.0,
    poll: float = _POLL_S,
) -> None:
    """Empty the stack's bucket (every version), delete the stack and wait until it is gone."""
    if plan.bucket:
        account.empty_bucket(plan.bucket, on_emptied)
    stack_id = plan.stack.stack_id
    seen = _newest(account, stack_id)
    account.delete_stack(stack_id)
    stack, new = _follow(account, stack_id, seen, on_event, timeout, poll)
    if stack is not None and stack.status != "DELETE_COMPLETE":
        first = first_failure(new)
        what = f"{first.logical_id} ({first.resource_type}): {first.reason}" if first else stack.reason or stack.status
        raise InfraError(
            f"Deleting stack {plan.stack.name} failed: {what.rstrip('.')}.",
            "Fix that and run `dl infra destroy` again.",
        )


def forget(stack: Stack, settings: config.Settings) -> list[str]:
    """Remove from dl.toml the settings a deploy of ``stack`` wrote; the keys removed."""
    path = settings.config_path
    if path is None:
        return []
    wrote = {key: stack.outputs.get(output) for output, (_, key) in OUTPUTS.items()}
    wrote["stack_name"] = stack.name
    file_label = f"{config.FILE_NAME} ({path})"
    removed = {
        key: None
        for key, value in wrote.items()
        if key not in ("region", "prefix")
        and settings.sources.get(key) == file_label
        and getattr(settings, key) == value
    }
    updates: dict[str, dict[str, object]] = {"aws": removed} if removed else {}
    if settings.target == "sagemaker" and settings.sources.get("target") == file_label and removed:
        updates["defaults"] = {"target": None}
    if not updates:
        return []
    config.write_settings(updates, path=path)
    return [f"{config.FIELDS[key].section}.{key}" for table in updates.values() for key in table]
