"""The sagemaker backend: a run is a SageMaker training job running the same package.

``submit`` uploads the package under its hash (once), builds the CreateTrainingJob request
(request.py) and creates the job; everything after that is read back from AWS: status
from DescribeTrainingJob (many runs at once from ListTrainingJobs pages), logs from
CloudWatch, checkpoints and the model from S3. Only aws.py imports boto3.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.backends import runtime_io
from orchestrator.backends.base import Artifact, LaunchSpec
from orchestrator.backends.sagemaker import request as req
from orchestrator.errors import UsageError
from orchestrator.failures import FailureKind, from_reason
from orchestrator.store import Run, RunStatus, Store

if TYPE_CHECKING:
    from orchestrator.backends.sagemaker.aws import Aws
    from orchestrator.config import Settings

# Managed spot usually saves 60-90% against on-demand; estimates use 70% off.
SPOT_PRICE_FACTOR = 0.3

_STATUS = {
    "InProgress": RunStatus.IN_PROGRESS,
    "Completed": RunStatus.COMPLETED,
    "Failed": RunStatus.FAILED,
    "Stopping": RunStatus.STOPPING,
    "Stopped": RunStatus.STOPPED,
}


def placement_for(spec: LaunchSpec, cfg: Settings, *, dry_run: bool = False) -> req.Placement:
    """Settings (``cfg``, resolved for this spec) + catalog + image tables → where the run goes.
    With ``dry_run``, missing bucket/role become visible placeholders instead of errors."""
    from orchestrator.backends.sagemaker.catalog import choose
    from orchestrator.backends.sagemaker.images import DEFAULT_FRAMEWORK_VERSION, training_image
    from orchestrator.config import require

    if not dry_run:
        require(cfg, "region", "bucket", "role_arn", purpose="the sagemaker target")
    region = cfg.region or "us-east-1"
    nodes = spec.options.nodes or 1
    instance = choose(cfg.gpu or None, cfg.instance_type or None, nodes=nodes)
    image = spec.options.image or training_image(
        region,
        cfg.framework_version or DEFAULT_FRAMEWORK_VERSION,
        None,
        instance.gpus > 0,
        instance.type,
    )
    return req.Placement(
        region=region,
        bucket=cfg.bucket or "<bucket: set DL_BUCKET>",
        prefix=cfg.prefix,
        role_arn=cfg.role_arn or "arn:aws:iam::000000000000:role/set-DL_ROLE_ARN",
        image=image,
        instance_type=instance.type,
        gpus_per_node=instance.gpus,
        nodes=nodes,
        volume_gb=int(cfg.volume_gb),
        max_hours=float(cfg.max_hours),
        spot=bool(cfg.spot),
        tags=dict(cfg.tags),
    )


@dataclass
class _Staged:
    """A warm-start checkpoint staged as a one-file S3 folder, so the ``init`` channel is unambiguous."""

    source: str  # a local file, or the s3:// URI of one object
    folder: str  # s3://.../init/<id>/  (what the channel names)
    key_uri: str  # s3://.../init/<id>/<file name>


def _staged(spec: LaunchSpec, placement: req.Placement) -> dict[str, _Staged]:
    """Channels that name a single checkpoint (``--from``): a local file goes under its sha256, an
    S3 object is copied server-side under a hash of its URI. Computing this sends nothing."""
    import hashlib

    staged = {}
    for name, path in spec.data.items():
        if path.endswith("/") or (path.startswith("s3://") and not path.endswith(".ckpt")):
            continue
        if path.startswith("s3://"):
            ident = "s3-" + hashlib.sha256(path.encode()).hexdigest()[:24]
        else:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            ident = digest.hexdigest()
        folder = placement.s3(runtime_io.INIT_CHANNEL, ident) + "/"
        staged[name] = _Staged(path, folder, folder + path.rsplit("/", 1)[-1])
    return staged


def upload_inputs(aws, spec: LaunchSpec, placement: req.Placement) -> str:
    """Put the package under its hash (once) and stage --from checkpoints; return the package URI."""
    package_uri = req.package_uri(placement, spec.package.sha256)
    existing = aws.head(package_uri)
    if existing is None or existing.size != spec.package.size:
        aws.upload(spec.package.path, package_uri)
    for stage in _staged(spec, placement).values():
        if stage.source.startswith("s3://"):
            aws.copy(stage.source, stage.key_uri)
        elif aws.head(stage.key_uri) is None:
            aws.upload(Path(stage.source), stage.key_uri)
    return package_uri


def request_for(
    run_id: str, spec: LaunchSpec, placement: req.Placement, git_commit: str | None, schedule: str | None = None
) -> dict:
    data = dict(spec.data)
    for name, stage in _staged(spec, placement).items():
        data[name] = stage.folder
    return req.build_request(
        run_id=run_id,
        job_name=spec.job.name,
        monitor=spec.job.monitor,
        params=spec.params,
        data=data,
        package_sha256=spec.package.sha256,
        git_commit=git_commit,
        placement=placement,
        schedule=schedule,
        program=spec.job.entry_point,
    )


def estimate(placement: req.Placement) -> dict:
    """On-demand and spot cost of the longest the run may take (max hours × nodes)."""
    from orchestrator.backends.sagemaker.catalog import load

    hourly = load().price(placement.instance_type, placement.region) * placement.nodes
    worst = hourly * placement.max_hours
    return {
        "price_per_hour": round(hourly, 4),
        "max_hours": placement.max_hours,
        "max_cost_on_demand": round(worst, 2),
        "max_cost_spot_estimate": round(worst * SPOT_PRICE_FACTOR, 2),
        "spot": placement.spot,
    }


def failure_kind(job: dict) -> FailureKind | None:
    """Why a finished training job did not complete, from DescribeTrainingJob: a Stopped job at
    its MaxRuntime is a timeout, at spot's MaxWaitTime (or interrupted) a spot failure, else
    stopped; a Failed one is what its FailureReason names (user code for an AlgorithmError)."""
    status, secondary = job.get("TrainingJobStatus"), job.get("SecondaryStatus")
    if status == "Stopped":
        return {"MaxRuntimeExceeded": FailureKind.TIMEOUT, "MaxWaitTimeExceeded": FailureKind.SPOT,
                "Interrupted": FailureKind.SPOT}.get(secondary, FailureKind.STOPPED)  # fmt: skip
    if status == "Failed":
        return from_reason(job.get("FailureReason"))
    return None


class SageMakerBackend:
    """Features: stop, follow logs, pull, refresh many, ready, schedules, doctor, commands,
    import (base.py).
    No resume: SageMaker resumes spot interruptions itself; a stopped run continues as a new run
    (``--from``)."""

    name = "sagemaker"
    public_state_keys = (
        "region", "instance_type", "nodes", "spot", "arn", "secondary_status", "price_per_hour",
        "billable_seconds", "training_seconds", "cost_usd", "spot_savings",
    )  # fmt: skip
    accepted_options = frozenset(
        {"gpu", "instance_type", "nodes", "spot", "max_hours", "volume_gb", "image", "framework_version",
         "region", "profile"}
    )  # fmt: skip

    def __init__(self, settings: Callable[..., Settings] | None = None) -> None:
        """``settings(cli)`` resolves dl's settings with flags on top (Client.settings, which reads
        dl.toml once); without it each call resolves them afresh. The AWS clients this backend
        makes are kept on it, one set per region and profile, for as long as it lives."""
        from orchestrator.config import load_settings

        self.settings = settings or load_settings
        self._clients: dict[tuple[str | None, str | None], Aws] = {}

    def settings_for(self, spec: LaunchSpec) -> Settings:
        return self.settings(spec.options.settings())

    def aws(self, region: str | None, profile: str | None = None) -> Aws:
        """The clients for one region and profile, made on first use (aws.Aws)."""
        if (region, profile) not in self._clients:
            from orchestrator.backends.sagemaker.aws import Aws

            self._clients[region, profile] = Aws(region, profile)
        return self._clients[region, profile]

    def _aws(self, run: Run) -> Aws:
        return self.aws(run.backend_state.get("region"), run.backend_state.get("profile"))

    def check(self, spec: LaunchSpec) -> None:
        for name, uri in spec.data.items():
            if name == runtime_io.INIT_CHANNEL and Path(uri).is_file():
                continue  # a local checkpoint for --from: uploaded under its hash at submit
            if not uri.startswith("s3://"):
                upload = (
                    f"aws s3 cp {uri} s3://BUCKET/PREFIX/data/{name}/{Path(uri).name}"
                    if Path(uri).is_file()
                    else f"aws s3 sync {uri} s3://BUCKET/PREFIX/data/{name}/"
                )
                raise UsageError(
                    f"Channel {name} is a local path ({uri}); SageMaker reads channels from S3.",
                    f"Upload it under the bucket's prefix ({upload}) and pass that URI.",
                )
        # An unknown GPU or a count no instance type has is bad input: say so before a run is recorded.
        from orchestrator.backends.sagemaker.catalog import choose

        cfg = self.settings_for(spec)
        choose(cfg.gpu or None, cfg.instance_type or None, nodes=spec.options.nodes or 1)

    def register_commands(self, app) -> None:
        """`dl infra` and `dl gpus` (cli.py)."""
        from orchestrator.backends.sagemaker.cli import register

        register(app)

    def doctor_checks(self, settings, options: dict[str, object]) -> list:
        """Region, credentials, stack, bucket, role and GPU quota (doctor.py)."""
        from orchestrator.backends.sagemaker.doctor import aws_checks

        return aws_checks(settings, options.get("gpu"))

    def scheduler(self):
        from orchestrator.backends.sagemaker.schedules import EventBridgeScheduler

        return EventBridgeScheduler(self)

    def import_runs(self, store: Store) -> list[Run]:
        """Insert every dl-tagged training job of the configured account and region that the store
        does not know (imports.py); a UsageError when no region and bucket are configured here."""
        from orchestrator.backends.sagemaker.aws import has_credentials
        from orchestrator.backends.sagemaker.imports import import_tagged
        from orchestrator.config import load_settings, require

        cfg = load_settings()
        require(cfg, "region", "bucket", purpose="the sagemaker target")
        profile = cfg.session_kwargs().get("profile_name")
        has_credentials(cfg.region, profile)
        return import_tagged(store, [(cfg.region, profile)], None)

    def ready(self, spec: LaunchSpec) -> None:
        """Everything a real launch needs besides AWS itself: settings, and credentials to sign with."""
        from orchestrator.backends.sagemaker.aws import has_credentials
        from orchestrator.config import require

        cfg = self.settings_for(spec)
        require(cfg, "region", "bucket", "role_arn", purpose="the sagemaker target")
        has_credentials(cfg.region, cfg.session_kwargs().get("profile_name"))

    def describe(self, spec: LaunchSpec, run_id: str, git_commit: str | None) -> dict:
        """What a launch would send and cost; sends nothing."""
        placement = placement_for(spec, self.settings_for(spec), dry_run=True)
        request = request_for(run_id, spec, placement, git_commit)
        req.validate(request)
        return {
            "request": request,
            "resources": {
                "instance_type": placement.instance_type,
                "nodes": placement.nodes,
                "gpus_per_node": placement.gpus_per_node,
                "region": placement.region,
                "image": placement.image,
            },
            "cost": estimate(placement),
            "package_uri": req.package_uri(placement, spec.package.sha256),
        }

    def submit(self, store: Store, run: Run, spec: LaunchSpec) -> None:
        cfg = self.settings_for(spec)
        placement = placement_for(spec, cfg)
        # botocore validates the request against the service model before sending it (see aws.translate).
        request = request_for(run.id, spec, placement, run.git_commit)
        profile = cfg.session_kwargs().get("profile_name")
        aws = self.aws(placement.region, profile)
        package_uri = upload_inputs(aws, spec, placement)
        prefix = req.run_prefix(placement, run.id)
        store.merge_backend_state(
            run.id,
            region=placement.region,
            profile=profile,
            instance_type=placement.instance_type,
            nodes=placement.nodes,
            spot=placement.spot,
            price_per_hour=estimate(placement)["price_per_hour"],
            package_uri=package_uri,
        )
        store.update(
            run.id,
            log_uri=f"cloudwatch:{req.LOG_GROUP}/{run.id}",
            checkpoint_uri=f"{prefix}/checkpoints",
            model_uri=req.model_uri(request),
            output_uri=f"{prefix}/output",
        )
        arn = aws.create_training_job(request)
        store.merge_backend_state(run.id, arn=arn)

    # -- status --------------------------------------------------------------------------

    def refresh(self, store: Store, run: Run) -> Run:
        if run.status.is_terminal:
            return run
        self._apply(store, run, self._aws(run).describe_training_job(run.id))
        return store.get(run.id)

    def refresh_many(self, store: Store, runs: list[Run]) -> list[Run]:
        """One ListTrainingJobs walk for all runs of a region; DescribeTrainingJob only for those that changed."""
        pending = [r for r in runs if not r.status.is_terminal]
        if len(pending) <= 2:
            return [self.refresh(store, r) for r in runs]
        by_region: dict[tuple, list[Run]] = {}
        for run in pending:
            by_region.setdefault((run.backend_state.get("region"), run.backend_state.get("profile")), []).append(run)
        for (region, profile), group in by_region.items():
            aws = self.aws(region, profile)
            oldest = min(r.created_at for r in group)
            after = datetime.fromtimestamp(oldest, tz=UTC) - timedelta(hours=1)
            wanted = {r.id: r for r in group}
            for summary in aws.list_training_jobs(after):
                run = wanted.pop(summary["TrainingJobName"], None)
                if run is None:
                    continue
                status = _STATUS.get(summary["TrainingJobStatus"], run.status)
                if status != run.status or status.is_terminal:
                    self._apply(store, run, aws.describe_training_job(run.id))
                if not wanted:
                    break
        fresh = {r.id: store.get(r.id) for r in pending}
        return [fresh.get(r.id, r) for r in runs]

    def _apply(self, store: Store, run: Run, job: dict) -> None:
        status = _STATUS.get(job.get("TrainingJobStatus"), run.status)
        billable = job.get("BillableTimeInSeconds")
        training = job.get("TrainingTimeInSeconds")
        price = run.backend_state.get("price_per_hour") or 0.0
        state = {
            "secondary_status": job.get("SecondaryStatus"),
            "billable_seconds": billable,
            "training_seconds": training,
        }
        if billable is not None:
            state["cost_usd"] = round(billable / 3600 * price, 4)
        if billable and training:
            state["spot_savings"] = round(1 - billable / training, 3) if training else None
        store.merge_backend_state(run.id, **state)
        metrics = {m["MetricName"]: float(m["Value"]) for m in job.get("FinalMetricDataList", []) or []}
        if run.started_at is None and (job.get("TrainingStartTime") or status is not RunStatus.PENDING):
            start = job.get("TrainingStartTime")
            store.mark_in_progress(run.id, started_at=start.timestamp() if start else None)
        if status.is_terminal:
            end = job.get("TrainingEndTime") or job.get("LastModifiedTime")
            final, rows = self._read_output(run)
            if rows:  # stored before the run reads as finished, so whoever sees it ended sees its curves
                store.replace_epoch_metrics(run.id, rows)
            store.mark_finished(
                run.id,
                status,
                failure_reason=job.get("FailureReason") if status is RunStatus.FAILED else None,
                metrics=final or metrics or run.metrics,
                ended_at=end.timestamp() if end else None,
                failure_kind=failure_kind(job),
            )
        elif status is RunStatus.STOPPING:
            store.mark_stopping(run.id)

    def _read_output(self, run: Run) -> tuple[dict, list[dict]]:
        """Final metrics (summary.json) and per-epoch rows (metrics.csv) from the run's output.tar.gz,
        read once, when the run ends."""
        import io
        import tarfile

        if not run.model_uri:
            return {}, []
        output = run.model_uri.rsplit("/", 1)[0] + "/output.tar.gz"
        aws = self._aws(run)
        meta = aws.head(output)
        if meta is None or meta.size > 50 * 1024 * 1024:
            return {}, []
        bucket, key = _split(output)
        try:
            with tarfile.open(fileobj=io.BytesIO(aws.read(bucket, key)), mode="r:gz") as tar:
                files = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}

                def text(name: str) -> str:
                    return tar.extractfile(files[name]).read().decode() if name in files else ""

                return runtime_io.summary_final(text(runtime_io.SUMMARY_JSON)), runtime_io.epoch_rows(
                    text(runtime_io.METRICS_CSV)
                )
        except (tarfile.TarError, UnicodeDecodeError, OSError):
            return {}, []

    # -- logs ----------------------------------------------------------------------------

    def log_path(self, run: Run) -> Path | None:
        return None

    def read_log(self, run: Run) -> Iterator[str]:
        return self._stream(run, None)

    def follow(self, run: Run, store: Store, poll: float = 2.0) -> Iterator[str]:
        return self._stream(run, store, poll)

    def _stream(self, run: Run, store: Store | None, poll: float = 2.0) -> Iterator[str]:
        """CloudWatch events of every stream of the job, merged by time; with a store, on until it ends."""
        aws = self._aws(run)
        tokens: dict[str, str | None] = {}
        while True:
            streams = aws.log_streams(req.LOG_GROUP, f"{run.id}/")
            batch: list[tuple[int, str, str]] = []
            for stream in streams:
                host = stream.split("/", 1)[-1].rsplit("-", 1)[0]  # <job>/algo-1-1732550000 -> algo-1
                while True:
                    events, token = aws.log_events(req.LOG_GROUP, stream, tokens.get(stream))
                    tokens[stream] = token
                    batch += [(e["timestamp"], host, e["message"]) for e in events]
                    if not events:
                        break
            batch.sort(key=lambda item: item[0])
            many = len(streams) > 1
            for _, host, message in batch:
                yield (f"[{host}] " if many else "") + message.rstrip("\n") + "\n"
            if store is None:
                return
            current = self.refresh(store, store.get(run.id))
            if current.status.is_terminal and not batch:
                return
            time.sleep(poll)

    # -- stop ----------------------------------------------------------------------------

    def stop(self, store: Store, run: Run, grace: float) -> Run:
        """StopTrainingJob: SageMaker sends SIGTERM (the runtime saves last.ckpt), then SIGKILL after 120 s.
        stop() on a run in a terminal state returns it unchanged."""
        run = self.refresh(store, run)
        if run.status.is_terminal:
            return run
        self._aws(run).stop_training_job(run.id)
        store.merge_backend_state(run.id, stop_requested=True)
        store.mark_stopping(run.id)
        return self.refresh(store, store.get(run.id))

    # -- artifacts -----------------------------------------------------------------------

    def checkpoint_manifest(self, run: Run) -> list[dict]:
        """The runtime's manifest.json, synced to the checkpoint prefix with the checkpoints."""
        import json

        if not run.checkpoint_uri:
            return []
        aws = self._aws(run)
        bucket, key = _split(run.checkpoint_uri.rstrip("/") + "/manifest.json")
        if aws.head(f"s3://{bucket}/{key}") is None:
            return []
        try:
            return list(json.loads(aws.read(bucket, key)).values())
        except (ValueError, AttributeError):
            return []

    def artifacts(self, run: Run) -> list[Artifact]:
        aws = self._aws(run)
        found: list[Artifact] = []
        if run.checkpoint_uri:
            bucket, prefix = _split(run.checkpoint_uri.rstrip("/") + "/")
            for obj in aws.list_objects(run.checkpoint_uri):
                name = obj.key.removeprefix(prefix)  # its path under the prefix: sub/best.ckpt stays sub/best.ckpt
                if name.endswith(".ckpt"):
                    found.append(Artifact(name, "checkpoint", f"s3://{bucket}/{obj.key}", obj.size, obj.etag))
        if run.model_uri:
            model = aws.head(run.model_uri)
            if model is not None:
                found.append(Artifact("model.tar.gz", "model", run.model_uri, model.size, model.etag))
        if run.model_uri:
            output = run.model_uri.rsplit("/", 1)[0] + "/output.tar.gz"
            meta = aws.head(output)
            if meta is not None:
                found.append(Artifact("output.tar.gz", "metrics", output, meta.size, meta.etag))
        return found

    def download(self, run: Run, items: list, root: Path, progress: bool | None = None):
        """Parallel, resumable, verified S3 downloads (transfer.py)."""
        from orchestrator.backends.sagemaker.aws import translate
        from orchestrator.backends.sagemaker.transfer import Progress, Transfer, download_all

        transfers = []
        for item in items:
            bucket, key = _split(item.artifact.location)
            size, etag = item.artifact.size or 0, item.artifact.etag or ""
            transfers.append(Transfer(bucket, key, size, etag, item.dest, item.verify))
        total = sum(t.size for t in transfers)
        with translate(f"pulling {run.id}"):
            # The listing's S3 client (one per region and profile), made before this.
            s3 = lambda: self._aws(run).client("s3")  # noqa: E731
            return download_all(s3, transfers, root, progress=Progress(total, enabled=progress))


def _split(uri: str) -> tuple[str, str]:
    from orchestrator.backends.sagemaker.aws import split_s3

    return split_s3(uri)
