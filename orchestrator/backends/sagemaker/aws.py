"""The module of the sagemaker backend that talks to AWS (botocore and boto3, imported lazily).

Clients come from a plain botocore session: boto3's session costs about 0.1 s more to import
and to make an S3 client, which every `dl pull`, `dl runs --sync` and `dl launch` would pay.
boto3 is imported only for its managed S3 transfers (upload, server-side copy, download).

Every AWS error leaves here as a DlError with one line saying what is wrong and what to
do: missing or expired credentials, AccessDenied (naming the action), a GPU quota of
zero, no capacity, a role SageMaker cannot assume, a bucket in another region,
throttling after botocore's own retries.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import BackendError, DlError, UsageError
from orchestrator.failures import FailureKind


class AwsError(BackendError):
    """An AWS call failed for a reason the user can act on."""


class CredentialsError(AwsError):
    failure_kind = FailureKind.PERMISSION


class AccessError(AwsError):
    """AWS refused an action: a missing IAM permission, or a role SageMaker cannot assume."""

    failure_kind = FailureKind.PERMISSION


class QuotaError(AwsError):
    failure_kind = FailureKind.QUOTA


class CapacityError(AwsError):
    failure_kind = FailureKind.CAPACITY


def _session(region: str | None, profile: str | None):
    """A botocore session as boto3.session.Session(region_name=region, profile_name=profile) makes one."""
    try:
        import botocore.session
        from botocore.exceptions import ProfileNotFound
    except ImportError:
        raise BackendError(
            "The sagemaker target needs boto3, which is not installed here.", "Install it: pip install -e '.[aws]'."
        ) from None

    try:
        session = botocore.session.Session(profile=profile)
        session.get_scoped_config()  # an unknown profile fails here, as boto3's session does
        if region:
            session.set_config_variable("region", region)
        return session
    except ProfileNotFound:
        raise CredentialsError(
            f"AWS profile {profile!r} is not configured.",
            "Run `aws configure --profile NAME`, or pick another with --profile / AWS_PROFILE.",
        ) from None


def has_credentials(region: str | None, profile: str | None) -> None:
    """Raise CredentialsError when boto3's chain finds no credentials (no request is made)."""
    if _session(region, profile).get_credentials() is None:
        raise CredentialsError(
            "No AWS credentials found.", "Run `aws configure` (or `aws sso login`), or set AWS_PROFILE."
        )


def _config(service: str):
    from botocore.config import Config

    from orchestrator.backends.sagemaker.transfer import WORKERS

    # Retries back off on throttling and 5xx before an error reaches the user: adaptive for the
    # control-plane APIs; standard for S3, where adaptive mode would slow a whole parallel pull
    # after a single SlowDown. A retry mode or attempt count set the standard way
    # (AWS_RETRY_MODE, AWS_MAX_ATTEMPTS) is left to botocore: a key given here would override it.
    retries = {}
    if not os.environ.get("AWS_RETRY_MODE"):
        retries["mode"] = "standard" if service == "s3" else "adaptive"
    if not os.environ.get("AWS_MAX_ATTEMPTS"):
        retries["max_attempts"] = 8
    # "app/dl" in every request's User-Agent (AWS's user_agent_appid). S3: a connection per pull
    # worker kept in the pool (and two for the listing and HEADs beside them); full-object
    # checksums of whole-object GETs checked while they stream (botocore's default, named
    # here because the pull relies on it: transfer._checksummed); no validation of the
    # parameters dl itself builds against the service model, ~0.25 of botocore's ~1.9 ms of CPU
    # per small GET here (bench/README.md, "Pull speed", 2026-12-01).
    extra = {}
    if service == "s3":
        extra = {
            "max_pool_connections": WORKERS + 2,
            "response_checksum_validation": "when_supported",
            "parameter_validation": False,
        }
    return Config(retries=retries, connect_timeout=10, read_timeout=60, user_agent_appid="dl", **extra)


@dataclass
class ObjectInfo:
    key: str
    size: int
    etag: str


class Aws:
    """Clients for one region/profile. Cheap to make; clients are created on first use."""

    def __init__(self, region: str | None, profile: str | None = None) -> None:
        self._session = _session(region, profile)
        self.region = self._session.get_config_variable("region")
        if not self.region:
            raise UsageError(
                "No AWS region configured.", "Set DL_REGION, add region under [aws] in dl.toml, or pass --region."
            )
        self._clients: dict[str, object] = {}

    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = self._session.create_client(service, config=_config(service))
        return self._clients[service]

    # -- S3 ----------------------------------------------------------------------------

    def head(self, uri: str) -> ObjectInfo | None:
        bucket, key = split_s3(uri)
        with translate(f"reading s3://{bucket}/{key}"):
            try:
                meta = self.client("s3").head_object(Bucket=bucket, Key=key)
            except Exception as exc:
                if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
        return ObjectInfo(key, meta["ContentLength"], meta["ETag"].strip('"'))

    def upload(self, path: Path, uri: str) -> None:
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3 import inject

        bucket, key = split_s3(uri)
        with translate(f"uploading to s3://{bucket}/{key}"):
            try:
                inject.upload_file(self.client("s3"), str(path), bucket, key)
            except S3UploadFailedError as exc:
                # boto3 wraps the ClientError (NoSuchBucket, AccessDenied, ...) it failed with.
                if exc.__context__ is not None:
                    raise exc.__context__ from None
                raise

    def copy(self, source_uri: str, dest_uri: str) -> None:
        """Server-side copy (no bytes through this machine)."""
        source_bucket, source_key = split_s3(source_uri)
        bucket, key = split_s3(dest_uri)
        with translate(f"copying {source_uri} to {dest_uri}"):
            from boto3.s3 import inject

            inject.copy(self.client("s3"), {"Bucket": source_bucket, "Key": source_key}, bucket, key)

    def list_objects(self, uri: str) -> list[ObjectInfo]:
        bucket, prefix = split_s3(uri)
        prefix = prefix.rstrip("/") + "/"
        found: list[ObjectInfo] = []
        with translate(f"listing s3://{bucket}/{prefix}"):
            for page in self.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    found.append(ObjectInfo(item["Key"], item["Size"], item["ETag"].strip('"')))
        return found

    def download(self, bucket: str, key: str, dest: Path, progress: Callable[[int], None] | None = None) -> None:
        with translate(f"downloading s3://{bucket}/{key}"):
            from boto3.s3 import inject

            inject.download_file(self.client("s3"), bucket, key, str(dest), Callback=progress)

    def read(self, bucket: str, key: str) -> bytes:
        with translate(f"reading s3://{bucket}/{key}"):
            return self.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()

    def bucket_region(self, bucket: str) -> str:
        with translate(f"reading bucket {bucket}"):
            answer = self.client("s3").get_bucket_location(Bucket=bucket)
        return answer.get("LocationConstraint") or "us-east-1"

    # -- SageMaker ---------------------------------------------------------------------

    def create_training_job(self, request: dict) -> str:
        with translate(f"creating training job {request['TrainingJobName']}", request=request):
            return self.client("sagemaker").create_training_job(**request)["TrainingJobArn"]

    def describe_training_job(self, name: str) -> dict:
        with translate(f"describing training job {name}"):
            return self.client("sagemaker").describe_training_job(TrainingJobName=name)

    def list_training_jobs(self, created_after) -> Iterator[dict]:
        """Summaries of jobs created after ``created_after`` (a datetime; None: every job), one page at a time."""
        pages = self.client("sagemaker").get_paginator("list_training_jobs")
        since = {"CreationTimeAfter": created_after} if created_after is not None else {}
        with translate("listing training jobs"):
            for page in pages.paginate(**since, MaxResults=100):
                yield from page.get("TrainingJobSummaries", [])

    def stop_training_job(self, name: str) -> None:
        with translate(f"stopping training job {name}"):
            self.client("sagemaker").stop_training_job(TrainingJobName=name)

    # -- CloudWatch Logs ---------------------------------------------------------------

    def log_streams(self, group: str, prefix: str) -> list[str]:
        names: list[str] = []
        with translate(f"listing log streams {group}/{prefix}"):
            try:
                pages = self.client("logs").get_paginator("describe_log_streams")
                for page in pages.paginate(logGroupName=group, logStreamNamePrefix=prefix):
                    names += [s["logStreamName"] for s in page.get("logStreams", [])]
            except Exception as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return []
                raise
        return sorted(names)

    def log_events(self, group: str, stream: str, token: str | None) -> tuple[list[dict], str | None]:
        """One batch of events after ``token`` (from the start when None) and the next token."""
        kwargs = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kwargs["nextToken"] = token
        with translate(f"reading log stream {stream}"):
            answer = self.client("logs").get_log_events(**kwargs)
        return answer.get("events", []), answer.get("nextForwardToken")

    # -- STS ---------------------------------------------------------------------------

    def whoami(self) -> dict:
        with translate("asking STS who this is"):
            return self.client("sts").get_caller_identity()


def split_s3(uri: str) -> tuple[str, str]:
    match = re.match(r"^s3://([^/]+)/?(.*)$", uri)
    if not match:
        raise UsageError(f"{uri!r} is not an s3://bucket/key URI.")
    return match.group(1), match.group(2)


def error_code(exc: Exception) -> str:
    """The AWS error code of a botocore ClientError (``NoSuchKey``, ``404``); ``""`` for any other error."""
    return _error_field(exc, "Code")


def error_message(exc: Exception) -> str:
    """The AWS error message of a botocore ClientError; ``""`` for any other error."""
    return _error_field(exc, "Message")


def _error_field(exc: Exception, name: str) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get(name, ""))


@contextmanager
def translate(doing: str, request: dict | None = None):
    """Turn botocore's exceptions into one-line DlErrors with a fix."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
    )

    try:
        yield
    except DlError:
        raise
    except (NoCredentialsError, PartialCredentialsError):
        raise CredentialsError(
            f"No AWS credentials found while {doing}.",
            "Run `aws configure` (or `aws sso login`), or set AWS_PROFILE.",
        ) from None
    except ParamValidationError as exc:
        problems = " ".join(str(exc).split())
        raise UsageError(
            f"dl built an invalid request while {doing}: {problems}", "This is a dl bug; please report it."
        ) from None
    except NoRegionError:
        raise UsageError("No AWS region configured.", "Set DL_REGION or add region under [aws] in dl.toml.") from None
    except EndpointConnectionError as exc:
        raise AwsError(f"Cannot reach AWS while {doing} ({exc}).", "Check the network and AWS_ENDPOINT_URL.") from None
    except ClientError as exc:
        raise classify(exc, doing, request) from None


def classify(exc, doing: str, request: dict | None = None) -> AwsError:
    """One ClientError → one actionable AwsError."""
    code = error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
    instance = (request or {}).get("ResourceConfig", {}).get("InstanceType", "this instance type")
    if code in ("ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId",
                "UnrecognizedClientException", "SignatureDoesNotMatch", "InvalidAccessKeyId"):  # fmt: skip
        return CredentialsError(
            f"AWS rejected the credentials while {doing} ({code}).",
            "Refresh them: `aws sso login` or `aws configure`; check AWS_PROFILE.",
        )
    if code in ("AccessDenied", "AccessDeniedException", "403", "Forbidden"):
        action = re.search(r"perform: ([\w:*-]+)", message)
        what = f" is not allowed to {action.group(1)}" if action else " lacks a permission"
        return AccessError(
            f"Access denied while {doing}: your identity{what}.",
            "Grant it in IAM (dl's infra/ template has the least-privilege policy), or use another profile.",
        )
    if code == "ResourceLimitExceeded":
        spot = " (spot)" if (request or {}).get("EnableManagedSpotTraining") else ""
        return QuotaError(
            f"Your SageMaker quota for {instance}{spot} training is too low ({message.rstrip('.')}).",
            "New accounts start at 0: request an increase in Service Quotas > Amazon SageMaker > "
            f"'{instance} for training job usage'{' (spot)' if spot else ''}, or pick another --gpu.",
        )
    if code in ("CapacityError", "InsufficientInstanceCapacity") or "capacity" in message.lower():
        return CapacityError(
            f"AWS has no capacity for {instance} right now ({message.rstrip('.')}).",
            "Try --spot with a longer wait, another --gpu, or another region.",
        )
    if code == "ValidationException" and "role" in message.lower() and ("assume" in message.lower()):
        return AccessError(
            f"SageMaker cannot assume the execution role ({message.rstrip('.')}).",
            "The role must trust sagemaker.amazonaws.com; `dl infra deploy` creates one, `dl doctor` checks it.",
        )
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
        return AwsError(
            f"The bucket is in another region than the one configured ({message.rstrip('.')}).",
            "Set DL_REGION to the bucket's region, or use a bucket in this region.",
        )
    if code in ("NoSuchBucket",):
        return AwsError(
            f"The S3 bucket does not exist ({message.rstrip('.')}).", "Run `dl infra deploy` or set DL_BUCKET."
        )
    if code in ("ThrottlingException", "Throttling", "SlowDown", "TooManyRequestsException"):
        return AwsError(
            f"AWS kept throttling dl while {doing}, even after retries.",
            "Wait a minute and try again; many parallel dl commands share one API rate.",
        )
    if code == "ResourceNotFound" or code == "ValidationException" and "not found" in message.lower():
        return AwsError(f"{message.rstrip('.')} (while {doing}).", "Check the run id with `dl runs`.")
    return AwsError(
        f"AWS said {code or 'error'} while {doing}: {message.rstrip('.')}.", "Rerun with --debug for details."
    )


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL")
