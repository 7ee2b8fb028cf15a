"""Cloud schedules: an EventBridge Scheduler schedule whose target is SageMaker's CreateTrainingJob.

The schedule's input is the full CreateTrainingJob request, built once at create time with the
package uploaded and pinned by its hash. Every name in it that must differ per firing carries
EventBridge's ``<aws.scheduler.execution-id>`` (a 36-character UUID, substituted at each firing):
the training job is ``NAME-<execution-id>``, within SageMaker's 63 characters. The job is tagged
``dl:schedule``; ``discover`` finds such jobs and imports them as runs. Nothing on the cloud side
needs this machine: ``--from SCHEDULE:best`` points the ``init`` channel at a fixed S3 prefix that
promotion (``copy_to_pointer``) keeps up to date.

AWS is reached through aws.Aws (clients) and aws.translate (errors), as everywhere in this backend.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

from orchestrator.backends.runtime_io import INIT_CHANNEL
from orchestrator.backends.sagemaker import request as req
from orchestrator.backends.sagemaker.aws import error_code
from orchestrator.errors import UsageError
from orchestrator.store import Run, Schedule, Store

if TYPE_CHECKING:
    from orchestrator.api import Plan
    from orchestrator.backends.sagemaker import SageMakerBackend
    from orchestrator.options import LaunchOptions

EXECUTION_ID = "<aws.scheduler.execution-id>"
TARGET_ARN = "arn:aws:scheduler:::aws-sdk:sagemaker:createTrainingJob"
INPUT_LIMIT = 8192  # EventBridge Scheduler's limit on a target's input, in characters
POINTER_NOTE = b"dl keeps this schedule's best checkpoint here (best.ckpt) once a run has been promoted.\n"


def run_name(schedule_name: str) -> str:
    """The training job name each firing gets, before EventBridge substitutes the execution id."""
    return f"{schedule_name}-{EXECUTION_ID}"


def fired(text: str, execution_id: str | None = None) -> str:
    """``text`` as EventBridge hands it to SageMaker for one firing (tests and dry runs)."""
    return text.replace(EXECUTION_ID, execution_id or str(uuid.uuid4()))


def pointer_uri(bucket: str, prefix: str, name: str) -> str:
    return req.Placement(region="", bucket=bucket, prefix=prefix, role_arn="", image="", instance_type="",
                         gpus_per_node=0).s3("schedules", name, "best")  # fmt: skip


def pointer_for(sm: SageMakerBackend, options: LaunchOptions, name: str) -> str:
    """The S3 prefix of schedule ``name``'s best pointer, from the settings these options resolve to."""
    from orchestrator.config import require

    cfg = sm.settings(options.settings())
    require(cfg, "bucket", purpose="cloud schedules")
    return pointer_uri(cfg.bucket, cfg.prefix, name)


def _request(schedule: Schedule, the_plan: Plan, placement: req.Placement) -> dict:
    from orchestrator.api import git_info
    from orchestrator.backends.sagemaker import request_for

    commit, _ = git_info(the_plan.job.path)
    return request_for(run_name(schedule.name), the_plan.spec, placement, commit, schedule=schedule.name)


def _upload(aws, the_plan: Plan, placement: req.Placement) -> None:
    """The package under its hash, and a --from RUN checkpoint staged as the backend stages it."""
    from orchestrator.backends.sagemaker import upload_inputs

    upload_inputs(aws, the_plan.spec, placement)


def _target(schedule: Schedule, the_plan: Plan, placement: req.Placement, role_arn: str) -> dict:
    request = _request(schedule, the_plan, placement)
    req.validate(json.loads(fired(json.dumps(request))))
    text = json.dumps(request, separators=(",", ":"), sort_keys=True)
    if len(text) > INPUT_LIMIT:
        raise UsageError(
            f"The CreateTrainingJob request is {len(text)} characters; EventBridge Scheduler takes {INPUT_LIMIT}.",
            "Use fewer or shorter hyperparameters and data channels.",
        )
    retries = schedule.spec.get("retries")
    return {
        "Arn": TARGET_ARN,
        "RoleArn": role_arn,
        "Input": text,
        "RetryPolicy": {
            "MaximumRetryAttempts": 2 if retries is None else int(retries),
            "MaximumEventAgeInSeconds": 3600,
        },
    }


def _window(schedule: Schedule) -> dict:
    minutes = schedule.spec.get("window_minutes")
    return {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": int(minutes)} if minutes else {"Mode": "OFF"}


def create(sm: SageMakerBackend, schedule: Schedule, the_plan: Plan) -> dict:
    """Upload the package, and create the schedule group (if missing) and the schedule.

    Returns what the store keeps about it (arn, group, region, profile, bucket, prefix)."""
    from orchestrator.backends.sagemaker import placement_for
    from orchestrator.backends.sagemaker.aws import has_credentials, translate
    from orchestrator.config import require

    cfg = sm.settings_for(the_plan.spec)
    require(cfg, "region", "bucket", "role_arn", "scheduler_role_arn", purpose="cloud schedules")
    profile = cfg.session_kwargs().get("profile_name")
    has_credentials(cfg.region, profile)
    placement = placement_for(the_plan.spec, cfg)
    aws = sm.aws(placement.region, profile)
    if schedule.spec.get("from_schedule"):
        pointer = the_plan.data[INIT_CHANNEL].rstrip("/")
        if not aws.list_objects(pointer):
            # SageMaker refuses an empty channel: a note keeps the prefix non-empty until a promotion.
            bucket, key = _split(pointer + "/README.txt")
            with translate(f"writing {pointer}"):
                aws.client("s3").put_object(Bucket=bucket, Key=key, Body=POINTER_NOTE)
    _upload(aws, the_plan, placement)
    target = _target(schedule, the_plan, placement, cfg.scheduler_role_arn)
    group = cfg.stack_name
    scheduler = aws.client("scheduler")
    with translate(f"creating schedule group {group}"):
        try:
            scheduler.get_schedule_group(Name=group)
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            scheduler.create_schedule_group(Name=group, Tags=[{"Key": "dl:stack", "Value": cfg.stack_name}])
    with translate(f"creating schedule {schedule.name}"):
        try:
            answer = scheduler.create_schedule(
                Name=schedule.name,
                GroupName=group,
                ScheduleExpression=schedule.expression,
                ScheduleExpressionTimezone=schedule.timezone,
                FlexibleTimeWindow=_window(schedule),
                Target=target,
                State="ENABLED",
                Description=f"dl: {schedule.job}, package {the_plan.package.sha256[:12]}",
            )
        except Exception as exc:
            if error_code(exc) == "ConflictException":
                raise UsageError(
                    f"EventBridge already has a schedule {schedule.name} in group {group}.",
                    f"Delete it (aws scheduler delete-schedule --name {schedule.name} --group-name {group})"
                    " or pick another name.",
                ) from None
            raise
    return {"arn": answer["ScheduleArn"], "group": group, "region": placement.region, "profile": profile,
            "bucket": placement.bucket, "prefix": placement.prefix}  # fmt: skip


def _get(aws, schedule: Schedule) -> dict:
    from orchestrator.backends.sagemaker.aws import translate

    with translate(f"reading schedule {schedule.name}"):
        return aws.client("scheduler").get_schedule(Name=schedule.name, GroupName=schedule.cloud["group"])


def _put(aws, schedule: Schedule, current: dict, **changes) -> None:
    from orchestrator.backends.sagemaker.aws import translate

    fields = {k: current[k] for k in ("ScheduleExpression", "FlexibleTimeWindow", "Target", "State") if k in current}
    if current.get("ScheduleExpressionTimezone"):
        fields["ScheduleExpressionTimezone"] = current["ScheduleExpressionTimezone"]
    if current.get("Description"):
        fields["Description"] = current["Description"]
    fields.update(changes)
    with translate(f"updating schedule {schedule.name}"):
        aws.client("scheduler").update_schedule(Name=schedule.name, GroupName=schedule.cloud["group"], **fields)


def set_state(sm: SageMakerBackend, schedule: Schedule, *, enabled: bool) -> None:
    """Pause (DISABLED) or resume (ENABLED) the EventBridge schedule, keeping everything else."""
    aws = sm.aws(schedule.cloud.get("region"), schedule.cloud.get("profile"))
    _put(aws, schedule, _get(aws, schedule), State="ENABLED" if enabled else "DISABLED")


def state(sm: SageMakerBackend, schedule: Schedule) -> dict:
    """The schedule as EventBridge holds it now (State, Target with its Input, ...)."""
    return _get(sm.aws(schedule.cloud.get("region"), schedule.cloud.get("profile")), schedule)


def replace_target(sm: SageMakerBackend, schedule: Schedule, the_plan: Plan) -> None:
    """Upload a new package and point the schedule's request at it (dl schedule update)."""
    from orchestrator.backends.sagemaker import placement_for

    cfg = sm.settings_for(the_plan.spec)
    placement = placement_for(the_plan.spec, cfg)
    aws = sm.aws(schedule.cloud.get("region"), schedule.cloud.get("profile"))
    _upload(aws, the_plan, placement)
    target = _target(schedule, the_plan, placement, cfg.scheduler_role_arn)
    _put(aws, schedule, _get(aws, schedule), Target=target,
         Description=f"dl: {schedule.job}, package {the_plan.package.sha256[:12]}")  # fmt: skip


def delete(sm: SageMakerBackend, schedule: Schedule) -> None:
    """Delete the EventBridge schedule; one already gone is fine."""
    from orchestrator.backends.sagemaker.aws import translate

    aws = sm.aws(schedule.cloud.get("region"), schedule.cloud.get("profile"))
    with translate(f"deleting schedule {schedule.name}"):
        try:
            aws.client("scheduler").delete_schedule(Name=schedule.name, GroupName=schedule.cloud["group"])
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise


def copy_to_pointer(sm: SageMakerBackend, schedule: Schedule, run: Run, location: str) -> str:
    """Server-side copy of a run's checkpoint to the schedule's ``best/best.ckpt``; returns its URI."""
    cloud = schedule.cloud
    dest = pointer_uri(cloud["bucket"], cloud.get("prefix", ""), schedule.name) + "/best.ckpt"
    sm.aws(cloud.get("region") or run.backend_state.get("region"), cloud.get("profile")).copy(location, dest)
    return dest


# -- discovering the runs a schedule started --------------------------------------------------


def discover(sm: SageMakerBackend, store: Store, schedules: list[Schedule]) -> list[Run]:
    """Import training jobs tagged ``dl:schedule`` that the store does not know yet.

    Looks in each schedule's region (and the configured one) at jobs created since the oldest
    schedule (30 days back when there is none here: a schedule made on another machine)."""
    import time
    from datetime import UTC, datetime, timedelta

    from orchestrator.backends.sagemaker.imports import import_tagged

    places = {(s.cloud.get("region"), s.cloud.get("profile")) for s in schedules if s.cloud.get("region")}
    cfg = sm.settings(None)
    if cfg.region:
        places.add((cfg.region, cfg.session_kwargs().get("profile_name")))
    if not places:
        raise UsageError("No AWS region configured to look for scheduled runs in.", "Set DL_REGION.")
    oldest = min((s.created_at for s in schedules), default=time.time() - 30 * 86400)
    since = datetime.fromtimestamp(oldest, tz=UTC) - timedelta(hours=1)
    return import_tagged(store, places, since, wanted=lambda tags: "dl:schedule" in tags)


def _split(uri: str) -> tuple[str, str]:
    from orchestrator.backends.sagemaker.aws import split_s3

    return split_s3(uri)


class EventBridgeScheduler:
    """The sagemaker target's Scheduler (base.Scheduler): EventBridge Scheduler fires the runs,
    ``discover`` imports them; the module's functions above do the work, with the backend's
    settings and AWS clients."""

    fires_here = False

    def __init__(self, backend: SageMakerBackend) -> None:
        self.backend = backend

    def check(self, retries: int | None, window_minutes: int | None) -> None:
        """EventBridge takes both: retries of a refused CreateTrainingJob, and a flexible window."""

    def pointer(self, name: str, options: LaunchOptions) -> str:
        return pointer_for(self.backend, options, name) + "/"

    def create(self, schedule: Schedule, plan: Plan) -> dict:
        return create(self.backend, schedule, plan)

    def set_state(self, schedule: Schedule, *, enabled: bool) -> None:
        set_state(self.backend, schedule, enabled=enabled)

    def replace_target(self, schedule: Schedule, plan: Plan) -> None:
        replace_target(self.backend, schedule, plan)

    def delete(self, schedule: Schedule) -> None:
        delete(self.backend, schedule)

    def copy_to_pointer(self, schedule: Schedule, run: Run, location: str) -> str:
        return copy_to_pointer(self.backend, schedule, run, location)

    def discover(self, store: Store, schedules: list[Schedule]) -> list[Run]:
        return discover(self.backend, store, schedules)
