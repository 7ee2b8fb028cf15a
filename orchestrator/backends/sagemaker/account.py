"""Account-level AWS calls behind `dl infra` and `dl doctor`: CloudFormation, IAM, Service Quotas,
STS, S3 bucket location and emptying, CloudWatch Logs groups.

Every call goes through :class:`Aws` clients (adaptive retries) and :func:`translate`, so a
failure leaves here as a one-line DlError with a fix. Answers are plain dataclasses; "not
found" is ``None``, never an exception, because for these callers absence is an answer
(no stack yet, no such role). Nothing here decides anything: :mod:`~orchestrator.backends.sagemaker.infra` and
:mod:`~orchestrator.backends.sagemaker.doctor` do, and tests can hand them a ``Mock(spec=Account)``.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from orchestrator.backends.sagemaker.aws import Aws, AwsError, error_code, error_message, translate

# CloudFormation's words for "this change set changes nothing" (FAILED status reason, or the
# ValidationError some endpoints return from CreateChangeSet directly).
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")


@dataclass(frozen=True)
class Identity:
    account: str
    arn: str


@dataclass(frozen=True)
class StackEvent:
    event_id: str
    timestamp: datetime
    logical_id: str
    resource_type: str
    status: str
    reason: str = ""


@dataclass(frozen=True)
class Stack:
    name: str
    stack_id: str
    status: str
    reason: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    updated: datetime | None = None


@dataclass(frozen=True)
class Change:
    action: str  # Add | Modify | Remove | Import | Dynamic
    logical_id: str
    resource_type: str
    replacement: str = ""  # True | False | Conditional, for Modify


@dataclass(frozen=True)
class ChangeSet:
    change_set_id: str
    status: str  # CREATE_PENDING | CREATE_IN_PROGRESS | CREATE_COMPLETE | FAILED | ...
    reason: str = ""
    changes: tuple[Change, ...] = ()

    @property
    def empty(self) -> bool:
        """CloudFormation refused it because it changes nothing."""
        return self.status == "FAILED" and any(words in self.reason for words in NO_CHANGES)


@dataclass(frozen=True)
class Role:
    name: str
    arn: str
    trusted_services: tuple[str, ...]  # services allowed to sts:AssumeRole it


@dataclass(frozen=True)
class Quota:
    name: str
    code: str
    value: float
    applied: bool = True  # False: the AWS default (the account's own value was not available)


def connect(region: str | None, profile: str | None = None) -> Account:
    """The account for ``region``/``profile``. The one place `dl infra` and `dl doctor` get it,
    so tests can substitute a fake here."""
    return Account(Aws(region, profile))


class Account:
    """One region's account-level calls. Cheap to make; clients open on first use."""

    def __init__(self, aws: Aws) -> None:
        self.aws = aws

    @property
    def region(self) -> str:
        return self.aws.region

    def _client(self, service: str):
        return self.aws.client(service)

    # -- STS -----------------------------------------------------------------------------

    def identity(self) -> Identity:
        with translate("asking STS who this is"):
            answer = self._client("sts").get_caller_identity()
        return Identity(account=answer["Account"], arn=answer["Arn"])

    # -- CloudFormation ------------------------------------------------------------------

    def stack(self, name: str) -> Stack | None:
        """The stack named ``name`` (or with that id), or None when there is none."""
        with translate(f"describing stack {name}"):
            try:
                found = self._client("cloudformation").describe_stacks(StackName=name)["Stacks"]
            except Exception as exc:
                if error_code(exc) == "ValidationError" and "does not exist" in error_message(exc):
                    return None
                raise
        if not found:
            return None
        raw = found[0]
        return Stack(
            name=raw["StackName"],
            stack_id=raw["StackId"],
            status=raw["StackStatus"],
            reason=raw.get("StackStatusReason") or "",
            outputs={o["OutputKey"]: o.get("OutputValue", "") for o in raw.get("Outputs") or []},
            parameters={p["ParameterKey"]: p.get("ParameterValue", "") for p in raw.get("Parameters") or []},
            updated=raw.get("LastUpdatedTime") or raw.get("CreationTime"),
        )

    def stack_events(self, stack: str, stop_at: Callable[[StackEvent], bool] | None = None) -> list[StackEvent]:
        """The stack's events, newest first, reading pages until ``stop_at(event)`` is true
        (that event is not included) or the history ends."""
        events: list[StackEvent] = []
        pages = self._client("cloudformation").get_paginator("describe_stack_events")
        with translate(f"reading events of stack {stack}"):
            for page in pages.paginate(StackName=stack):
                for raw in page.get("StackEvents", []):
                    event = StackEvent(
                        event_id=raw["EventId"],
                        timestamp=raw["Timestamp"],
                        logical_id=raw.get("LogicalResourceId", ""),
                        resource_type=raw.get("ResourceType", ""),
                        status=raw.get("ResourceStatus", ""),
                        reason=raw.get("ResourceStatusReason") or "",
                    )
                    if stop_at and stop_at(event):
                        return events
                    events.append(event)
        return events

    def newest_event_id(self, stack: str) -> str | None:
        """The id of the stack's latest event (one request, however long its history)."""
        with translate(f"reading events of stack {stack}"):
            events = self._client("cloudformation").describe_stack_events(StackName=stack).get("StackEvents", [])
        return events[0]["EventId"] if events else None

    def create_change_set(
        self, stack: str, name: str, template: str, parameters: list[dict], kind: str, description: str = ""
    ) -> str | None:
        """Create a change set of ``kind`` CREATE or UPDATE; its id, or None when CloudFormation
        answers at once that nothing would change."""
        with translate(f"creating a change set for stack {stack}"):
            try:
                answer = self._client("cloudformation").create_change_set(
                    StackName=stack,
                    ChangeSetName=name,
                    ChangeSetType=kind,
                    TemplateBody=template,
                    Parameters=parameters,
                    Capabilities=["CAPABILITY_NAMED_IAM"],
                    Description=description,
                )
            except Exception as exc:
                if error_code(exc) == "ValidationError" and any(words in error_message(exc) for words in NO_CHANGES):
                    return None
                raise
        return answer["Id"]

    def change_set(self, change_set_id: str) -> ChangeSet:
        changes: list[Change] = []
        status = reason = ""
        with translate("reading the change set"):
            token = None
            while True:
                kwargs = {"ChangeSetName": change_set_id, **({"NextToken": token} if token else {})}
                page = self._client("cloudformation").describe_change_set(**kwargs)
                status, reason = page.get("Status", ""), page.get("StatusReason") or ""
                for item in page.get("Changes", []):
                    rc = item.get("ResourceChange", {})
                    changes.append(
                        Change(
                            action=rc.get("Action", ""),
                            logical_id=rc.get("LogicalResourceId", ""),
                            resource_type=rc.get("ResourceType", ""),
                            replacement=rc.get("Replacement", "") or "",
                        )
                    )
                token = page.get("NextToken")
                if not token:
                    break
        return ChangeSet(change_set_id=change_set_id, status=status, reason=reason, changes=tuple(changes))

    def execute_change_set(self, change_set_id: str) -> None:
        with translate("executing the change set"):
            self._client("cloudformation").execute_change_set(ChangeSetName=change_set_id)

    def delete_change_set(self, change_set_id: str) -> None:
        with translate("deleting the change set"):
            self._client("cloudformation").delete_change_set(ChangeSetName=change_set_id)

    def delete_stack(self, stack: str) -> None:
        with translate(f"deleting stack {stack}"):
            self._client("cloudformation").delete_stack(StackName=stack)

    # -- S3 ------------------------------------------------------------------------------

    def bucket_region(self, bucket: str) -> str | None:
        """The region ``bucket`` is in, or None when it does not exist."""
        with translate(f"locating bucket {bucket}"):
            try:
                answer = self._client("s3").get_bucket_location(Bucket=bucket)
            except Exception as exc:
                if error_code(exc) in ("NoSuchBucket", "404"):
                    return None
                # A request to the wrong regional endpoint says where the bucket is.
                headers = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPHeaders", {})
                if headers.get("x-amz-bucket-region"):
                    return headers["x-amz-bucket-region"]
                raise
        return answer.get("LocationConstraint") or "us-east-1"

    def can_list(self, bucket: str, prefix: str) -> None:
        """Raise (AccessDenied and such, as a DlError) unless this identity can list ``prefix``."""
        with translate(f"listing s3://{bucket}/{prefix}"):
            self._client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)

    def bucket_usage(self, bucket: str) -> tuple[int, int] | None:
        """(object versions, bytes) in ``bucket``, delete markers included in the count; None
        when it does not exist."""
        count = size = 0
        pages = self._client("s3").get_paginator("list_object_versions")
        with translate(f"listing s3://{bucket}"):
            try:
                for page in pages.paginate(Bucket=bucket):
                    for item in page.get("Versions", []):
                        count, size = count + 1, size + item.get("Size", 0)
                    count += len(page.get("DeleteMarkers", []))
            except Exception as exc:
                if error_code(exc) == "NoSuchBucket":
                    return None
                raise
        return count, size

    def empty_bucket(self, bucket: str, progress: Callable[[int], None] | None = None) -> int:
        """Delete every object, version and delete marker in ``bucket``; how many. A bucket
        that does not exist is already empty."""
        deleted = 0
        s3 = self._client("s3")
        with translate(f"emptying s3://{bucket}"):
            try:
                while True:  # re-list after each batch: deleting while paginating skips keys
                    page = s3.list_object_versions(Bucket=bucket, MaxKeys=1000)
                    batch = [
                        {"Key": item["Key"], "VersionId": item["VersionId"]}
                        for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
                    ]
                    if not batch:
                        return deleted
                    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
                    if answer.get("Errors"):
                        first = answer["Errors"][0]
                        raise AwsError(
                            f"Cannot delete s3://{bucket}/{first.get('Key', '')}: {first.get('Code', '')} "
                            f"{first.get('Message', '')}".rstrip(),
                            "Deleting needs s3:DeleteObject and s3:DeleteObjectVersion on the bucket.",
                        )
                    deleted += len(batch)
                    if progress:
                        progress(deleted)
            except Exception as exc:
                if error_code(exc) == "NoSuchBucket":
                    return deleted
                raise

    # -- IAM -----------------------------------------------------------------------------

    def role(self, name: str) -> Role | None:
        with translate(f"reading IAM role {name}"):
            try:
                raw = self._client("iam").get_role(RoleName=name)["Role"]
            except Exception as exc:
                if error_code(exc) == "NoSuchEntity":
                    return None
                raise
        return Role(
            name=raw["RoleName"], arn=raw["Arn"], trusted_services=trusted_services(raw["AssumeRolePolicyDocument"])
        )

    # -- CloudWatch Logs -----------------------------------------------------------------

    def log_group_exists(self, name: str) -> bool:
        with translate(f"looking for log group {name}"):
            answer = self._client("logs").describe_log_groups(logGroupNamePrefix=name)
        return any(group["logGroupName"] == name for group in answer.get("logGroups", []))

    # -- Service Quotas ------------------------------------------------------------------

    def quota(self, service: str, name: str) -> Quota | None:
        """The quota called ``name`` (case-insensitive): the account's applied value, else AWS's
        default (Service Quotas lists only some quotas' applied values); None if unknown."""
        client = self._client("service-quotas")
        for operation, applied in (("list_service_quotas", True), ("list_aws_default_service_quotas", False)):
            with translate(f"reading {service} quotas"):
                paginator = client.get_paginator(operation)
                for page in paginator.paginate(ServiceCode=service, PaginationConfig={"PageSize": 100}):
                    found = find_quota(page.get("Quotas", []), name)
                    if found:
                        return Quota(found["QuotaName"], found.get("QuotaCode", ""), float(found["Value"]), applied)
        return None


def find_quota(quotas: list[dict], name: str) -> dict | None:
    """The entry of ``quotas`` (Service Quotas' shape) whose QuotaName is ``name``, ignoring case."""
    wanted = name.strip().lower()
    return next((q for q in quotas if str(q.get("QuotaName", "")).strip().lower() == wanted), None)


def trusted_services(document: dict | str) -> tuple[str, ...]:
    """Services an IAM trust policy lets assume the role (Allow statements with sts:AssumeRole)."""
    if isinstance(document, str):  # the raw API returns it URL-encoded; boto3 usually decodes it
        document = json.loads(urllib.parse.unquote(document))
    statements = document.get("Statement", [])
    services: list[str] = []
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if statement.get("Effect") != "Allow" or not {"sts:AssumeRole", "sts:*", "*"} & set(actions):
            continue
        principal = statement.get("Principal", {})
        given = principal.get("Service", []) if isinstance(principal, dict) else []
        services += [given] if isinstance(given, str) else list(given)
    return tuple(dict.fromkeys(services))
