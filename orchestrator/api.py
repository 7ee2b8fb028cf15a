"""dl's Python API: everything the CLI does, as functions.

    from orchestrator import api
    run = api.launch("mnist", overrides={"lr": "0.001"})
    api.wait(run.id); print(api.show(run.id).metrics)

Every function opens the store under DL_HOME; none imports torch, lightning or
boto3 unless the work needs it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import settings
from orchestrator.backends import REGISTRY, Capability, LaunchSpec, get_backend, require, supports
from orchestrator.backends.base import Artifact, SmokeResult
from orchestrator.errors import ArtifactError, UsageError
from orchestrator.jobs import Job, find_job
from orchestrator.options import LaunchOptions, check_accepted
from orchestrator.options import parse_assignments as parse_assignments  # part of this API too
from orchestrator.store import Run, RunStatus, Store, open_store

if TYPE_CHECKING:
    from orchestrator.packaging import Package


def default_target() -> str:
    """The project's default target: --target > DL_TARGET > dl.toml [defaults] target > local."""
    from orchestrator.config import load_settings

    return load_settings().target


def new_run_id(job_name: str, now: float | None = None) -> str:
    """``mnist-20261125-1930-a1b2``: readable, sortable, and a valid SageMaker job name (≤63)."""
    import secrets

    slug = "".join(c if c.isalnum() else "-" for c in job_name.lower()).strip("-") or "run"
    stamp = time.strftime("%Y%m%d-%H%M", time.gmtime(now or time.time()))
    suffix = secrets.token_hex(2)
    return f"{slug[: 63 - len(stamp) - len(suffix) - 2]}-{stamp}-{suffix}"


def _valid_run_name(name: str) -> str:
    import re

    if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name):
        raise UsageError(
            f"Run name {name!r} is not a valid SageMaker job name.",
            "Use up to 63 letters, digits and hyphens, starting with a letter or digit.",
        )
    return name


def git_info(path: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git repository holding ``path``; (None, None) outside one."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip())


@dataclass
class Plan:
    """What a launch would do, before anything runs. ``options`` are resolved: the target chosen,
    the channels absolute (a warm start among them as ``init``)."""

    job: Job
    params: dict[str, object]
    package: Package
    options: LaunchOptions

    @property
    def target(self) -> str:
        return self.options.target

    @property
    def data(self) -> dict[str, str]:
        return dict(self.options.data)

    @property
    def spec(self) -> LaunchSpec:
        return LaunchSpec(self.job, self.package, self.params, self.data, self.options)


def plan(
    job_name: str, *, overrides: dict[str, str] | None = None, options: LaunchOptions | None = None, **choices
) -> Plan:
    """Validate everything and build the package; starts nothing.

    ``options``: where and how it runs; ``choices``: LaunchOptions fields on top of them
    (``plan("mnist", target="local")``). A field the target does not take is a UsageError
    naming its flag, before anything is built."""
    from orchestrator.packaging import build_package

    options = LaunchOptions.of(options, **choices)
    target = options.target or default_target()
    job = find_job(job_name)
    params = job.resolve(overrides)
    backend = get_backend(target)
    check_accepted(options, target, backend)
    data = {name: str(Path(path).expanduser().resolve()) if "://" not in path else path
            for name, path in options.data.items()}  # fmt: skip
    allow = list(options.allow_secrets) or None  # files that look like secrets, packaged on purpose
    package = build_package(job, settings.dl_home() / "packages", settings.max_package_mb(), allow=allow)
    if options.from_run:
        if INIT_CHANNEL in data:
            raise UsageError(f"--from uses the data channel {INIT_CHANNEL!r}; --data {INIT_CHANNEL}=... clashes.")
        data[INIT_CHANNEL] = warm_start_source(options.from_run, target)
    if options.from_optimizer:
        if INIT_CHANNEL not in data:
            raise UsageError("--from-optimizer needs --from RUN.")
        params["init_optimizer"] = True
    the_plan = Plan(job, params, package, options.with_(target=target, data=data, from_run=None, from_optimizer=False))
    backend.check(the_plan.spec)
    return the_plan


def resume(run_id: str) -> tuple[Run, bool]:
    """Continue a Failed or Stopped run from its last checkpoint, with its own package, parameters
    and checkpoint folder. Returns (run, started); a Completed run is returned untouched."""
    store = open_store()
    run = refresh(store, store.get(run_id))
    backend = get_backend(run.target)
    if not supports(backend, Capability.RESUME):
        raise UsageError(
            f"Run {run.id} ran on {run.target}, which does not resume runs (SageMaker resumes spot interruptions"
            " by itself).",
            f"To continue it as a new run: dl launch {run.job} --target {run.target} --from {run.id}:last",
        )
    if run.status is RunStatus.COMPLETED:
        return run, False
    if not run.status.is_terminal:
        raise UsageError(f"Run {run.id} is still {run.status.value}.", f"Stop it first: dl stop {run.id}")
    backend.resume(store, run)  # checks the run can resume, then restarts it (see LocalBackend.resume)
    return store.get(run.id), True


INIT_CHANNEL = "init"


def warm_start_source(ref: str, target: str) -> str:
    """``RUN[:best|:last]`` → where the new run finds that checkpoint: a local folder for the local
    target (fetched from S3 first if the run was in the cloud), an S3 URI or a local file for sagemaker."""
    run_id, _, which = ref.partition(":")
    which = which or "best"
    if which not in ("best", "last"):
        raise UsageError(f"--from {ref!r}: after ':' comes best or last.", "Example: --from RUN:last")
    store = open_store()
    source = store.get(run_id)
    backend = get_backend(source.target)
    found = [a for a in select_artifacts(backend.artifacts(source), which) if a.kind == "checkpoint"]
    if not found:
        raise ArtifactError(f"Run {source.id} has no {which} checkpoint to start from.", "Check `dl show`.")
    artifact = found[0]
    if target != "local" and artifact.location.startswith("s3://"):
        return artifact.location
    if target != "local":
        return artifact.location  # a local file: the cloud backend uploads it under its hash
    folder = settings.dl_home() / "cache" / "init" / f"{source.id}-{artifact.name.removesuffix('.ckpt')}"
    label = f"{artifact.name} of run {source.id}"
    item = PullItem(artifact, folder / artifact.name, functools.partial(verify_checkpoint, name=label))
    require(backend, Capability.PULL).download(source, [item], folder, progress=False)
    return str(folder)


def describe(the_plan: Plan) -> dict:
    """Resources, cost estimate and (for cloud targets) the exact request; sends nothing."""
    commit, _ = git_info(the_plan.job.path)
    return get_backend(the_plan.target).describe(the_plan.spec, new_run_id(the_plan.job.name), commit)


def launch(
    job_name: str,
    *,
    overrides: dict[str, str] | None = None,
    options: LaunchOptions | None = None,
    name: str | None = None,
    **choices,
) -> Run:
    """Validate, package and start a run; return it at once (Pending or InProgress).
    ``choices``: LaunchOptions fields (``launch("mnist", target="local", data={"train": "./d"})``)."""
    return start(plan(job_name, overrides=overrides, options=options, **choices), name=name)


def start(the_plan: Plan, *, name: str | None = None, schedule: str | None = None, sweep: str | None = None) -> Run:
    """Start the run that ``the_plan`` describes (``schedule``: the schedule firing it;
    ``sweep``: the sweep it belongs to)."""
    from orchestrator.faults import fault

    store = open_store()
    run_id = _valid_run_name(name) if name else new_run_id(the_plan.job.name)
    if store.exists(run_id):
        raise UsageError(f"A run named {run_id!r} already exists.", "Pick another --name.")
    backend = get_backend(the_plan.target)
    if supports(backend, Capability.READY):
        backend.ready(the_plan.spec)  # settings and credentials, before anything is recorded
    # The backend claims the id (the local run folder) and says what the row starts with.
    state = backend.reserve(store, run_id) if supports(backend, Capability.RESERVE) else {}
    commit, dirty = git_info(the_plan.job.path)
    run = Run(
        id=run_id,
        job=the_plan.job.name,
        target=the_plan.target,
        status=RunStatus.PENDING,
        params=the_plan.params,
        package_hash=the_plan.package.sha256,
        git_commit=commit,
        git_dirty=dirty,
        created_at=time.time(),
        data=the_plan.data,
        job_dir=str(the_plan.job.path),
        schedule=schedule,
        sweep=sweep,
        backend_state=state,
    )
    store.insert(run)
    fault("after-insert")
    try:
        backend.submit(store, run, the_plan.spec)
    except BaseException as exc:
        # Once the backend has handed the run to its own process, that process records the
        # outcome: an interrupt here (Ctrl-C) must not call a running run Failed.
        if not store.get(run.id).backend_state.get("handed_over"):
            why = "the launch was interrupted." if isinstance(exc, KeyboardInterrupt) else str(exc)
            store.mark_finished(run.id, RunStatus.FAILED, failure_reason=f"Could not start: {why}")
        raise
    return store.get(run.id)


def smoke_test(the_plan: Plan, workdir: Path) -> SmokeResult:
    """Run the packaged code once on this machine through the container contract with fast_dev_run.

    Every target runs the same package under the same contract, so a target that cannot
    smoke-test here itself (a cloud one) is tested by the first registered backend that can."""
    backend = get_backend(the_plan.target)
    if not supports(backend, Capability.SMOKE_TEST):
        found = (b for b in map(get_backend, REGISTRY) if supports(b, Capability.SMOKE_TEST))
        backend = next(found, backend)
    return require(backend, Capability.SMOKE_TEST).smoke_test(the_plan.spec, workdir)


def refresh(store: Store, run: Run) -> Run:
    if run.status.is_terminal:
        return run
    return get_backend(run.target).refresh(store, run)


def list_runs(
    *,
    job: str | None = None,
    status: str | None = None,
    limit: int | None = 50,
    target: str | None = None,
    sort: str | None = None,
    sweep: str | None = None,
) -> list[Run]:
    """Runs, newest first; with ``sort`` ("METRIC", "METRIC:desc" or "METRIC:asc"), ranked by that
    final metric (descending unless ``:asc``), runs without it last, then ``limit`` applied."""
    store = open_store()
    wanted = RunStatus.parse(status) if status else None
    order = parse_sort(sort) if sort else None
    runs = store.list(job=job, status=wanted, target=target, limit=None if order else limit, sweep=sweep)
    by_target: dict[str, list[Run]] = {}
    for run in runs:
        if not run.status.is_terminal:
            by_target.setdefault(run.target, []).append(run)
    fresh: dict[str, Run] = {}
    for name, group in by_target.items():
        backend = get_backend(name)
        if supports(backend, Capability.REFRESH_MANY):
            updated = backend.refresh_many(store, group)
        else:
            updated = [backend.refresh(store, r) for r in group]
        fresh.update({r.id: r for r in updated})
    runs = [fresh.get(run.id, run) for run in runs]
    if order:
        runs = rank(runs, *order)[:limit] if limit else rank(runs, *order)
    return runs


def parse_sort(text: str) -> tuple[str, bool]:
    """``"val_acc"`` → ("val_acc", descending=True); ``"val_loss:asc"`` → ("val_loss", False)."""
    metric, _, direction = text.partition(":")
    direction = direction.lower() or "desc"
    if not metric or direction not in ("asc", "desc"):
        raise UsageError(f"--sort {text!r} is not METRIC[:asc|:desc].", "Example: --sort val_loss:asc")
    return metric, direction == "desc"


def rank(runs: list[Run], metric: str, descending: bool = True) -> list[Run]:
    """Runs ordered by a final metric; those without it keep their order, after the others.
    A metric that no run has is a usage error naming the metrics there are."""
    having = [r for r in runs if isinstance(r.metrics.get(metric), (int, float))]
    if runs and not having:
        known = sorted({name for r in runs for name in r.metrics})
        raise UsageError(
            f"No run here has a metric {metric!r}.",
            f"Known metrics: {', '.join(known)}." if known else "No run has finished with metrics yet.",
        )
    having.sort(key=lambda r: r.metrics[metric], reverse=descending)
    return having + [r for r in runs if r not in having]


def epoch_metrics(run_id: str) -> list[dict]:
    """The run's metrics per epoch, in order: ``[{"epoch": 0, "step": 7, "val_acc": 0.91, ...}, ...]``.

    Stored when a local run ends; while it runs (or if it died before storing them) they are read
    from its metrics.csv."""
    store = open_store()
    run = store.get(run_id)
    rows = store.epoch_metrics(run.id)
    if rows or not run.output_uri or "://" in run.output_uri:
        return rows
    from orchestrator.backends.runtime_io import read_epoch_rows

    return read_epoch_rows(Path(run.output_uri) / "data")


def monitor_of(run: Run) -> tuple[str | None, str]:
    """The monitored metric and mode of the run's job, from its job.toml (None when it cannot be read)."""
    from orchestrator.errors import JobError
    from orchestrator.jobs import load_job

    try:
        job = load_job(Path(run.job_dir)) if run.job_dir else find_job(run.job)
    except JobError:
        return None, "max"
    return job.monitor, job.mode


def best_epoch(run: Run) -> dict | None:
    """The epoch where the job's monitored metric was best: {metric, value, epoch, step}; None if unknown."""
    monitor, mode = monitor_of(run)
    rows = [r for r in epoch_metrics(run.id) if monitor and r.get(monitor) is not None]
    if not rows:
        return None
    pick = max if mode == "max" else min
    row = pick(rows, key=lambda r: r[monitor])
    return {"metric": monitor, "value": row[monitor], "epoch": row["epoch"], "step": row.get("step")}


def show(run_id: str) -> Run:
    store = open_store()
    return refresh(store, store.get(run_id))


def logs(run_id: str, *, follow: bool = False) -> Iterator[str]:
    """The run's log; with ``follow``, keep yielding until the run ends."""
    store = open_store()
    run = store.get(run_id)
    backend = get_backend(run.target)
    if follow:
        require(backend, Capability.FOLLOW_LOGS)
    path = backend.log_path(run)  # None: the backend reads its logs elsewhere (CloudWatch)
    if path is not None and not path.exists():
        raise ArtifactError(f"Run {run.id} has no log yet.", "It may still be starting; try again.")
    return backend.follow(run, store) if follow else backend.read_log(run)


def checkpoints(run: Run) -> list[dict]:
    """The run's checkpoint manifest (file, step, epoch, monitored value, size, sha256, written_at)."""
    backend = get_backend(run.target)
    entries = backend.checkpoint_manifest(run)
    return sorted(entries, key=lambda e: e.get("written_at") or "")


def stale_checkpoint_warning(run: Run, entries: list[dict], now: float | None = None) -> str | None:
    """For a running cloud run: say so when the newest checkpoint is older than the epochs suggest."""
    if run.status.is_terminal or run.target == "local" or not entries or not run.started_at:
        return None
    import calendar

    now = now or time.time()
    newest = max(calendar.timegm(time.strptime(e["written_at"], "%Y-%m-%dT%H:%M:%SZ")) for e in entries)
    epochs = max(1, max(int(e.get("epoch") or 0) for e in entries) + 1)
    per_epoch = (newest - run.started_at) / epochs
    allowed = max(15 * 60, 3 * per_epoch)
    age = now - newest
    if age <= allowed:
        return None
    return (
        f"The newest checkpoint is {int(age // 60)} minutes old, but epochs take about {int(per_epoch // 60) or 1}"
        " minutes: checkpoints may have stopped syncing to S3. Check `dl logs` for errors."
    )


def wait(run_id: str, *, timeout: float | None = None, poll: float = 0.2) -> Run:
    """Block until the run reaches a terminal state (or ``timeout`` seconds pass)."""
    store = open_store()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = refresh(store, store.get(run_id))
        if run.status.is_terminal or (deadline is not None and time.monotonic() >= deadline):
            return run
        time.sleep(poll)


def stop(run_id: str, *, grace: float = 60.0) -> Run:
    """Stop a run gracefully (it saves a checkpoint). A finished run is returned unchanged."""
    store = open_store()
    run = store.get(run_id)
    return require(get_backend(run.target), Capability.STOP).stop(store, run, grace)


PULL_CHOICES = ("best", "last", "all")


@dataclass
class PullItem:
    """One artifact and where it lands. ``verify(path, source_checked)`` raises ArtifactError for
    a bad file; ``source_checked`` says the bytes already matched the source's own checksum."""

    artifact: Artifact
    dest: Path
    verify: Callable[[Path, bool], None] | None = None


@dataclass
class PullResult:
    dest: Path
    planned: list[PullItem]
    fetched: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    unpacked: list[Path] = field(default_factory=list)
    bytes: int = 0
    resumed_bytes: int = 0


def pull(
    run_id: str, *, to: Path | None = None, which: str = "best", dry_run: bool = False, progress: bool | None = None
) -> PullResult:
    """Bring the model and checkpoints of a run into ``to`` (default ``./<run-id>``).

    ``which``: best (the best checkpoint, or last when the job monitors nothing), last,
    or all (every checkpoint plus metrics). pull() never leaves a partial file in place:
    each file is verified and renamed into place only when complete (a corrupt checkpoint
    is reported by name), files already there and unchanged are skipped, and an
    interrupted pull continues where it stopped. A model archive is unpacked beside itself.
    """
    if which not in PULL_CHOICES:
        raise UsageError(f"Unknown choice {which!r}.", f"Use one of {', '.join(PULL_CHOICES)}.")
    store = open_store()
    run = store.get(run_id)
    backend = require(get_backend(run.target), Capability.PULL)
    selected = select_artifacts(backend.artifacts(run), which)
    if not any(a.kind in ("checkpoint", "model") for a in selected):
        state = "" if run.status.is_terminal else f" (it is {run.status.value})"
        raise ArtifactError(f"Run {run.id} has no checkpoints or model yet{state}.", "Check `dl show` and `dl logs`.")
    dest = (to or Path.cwd() / run.id).expanduser().resolve()
    items = []
    for artifact in selected:
        folder = {"model": "model", "checkpoint": "checkpoints", "metrics": "metrics"}[artifact.kind]
        check = None
        if artifact.name.endswith(".ckpt"):
            label = f"{artifact.name} of run {run.id}"
            check = functools.partial(verify_checkpoint, name=label)
        items.append(PullItem(artifact, dest / folder / artifact.name, check))
    result = PullResult(dest, items)
    if dry_run:
        return result
    report = backend.download(run, items, dest, progress=progress)
    result.fetched, result.skipped = report.fetched, report.skipped
    result.bytes, result.resumed_bytes = report.bytes, report.resumed_bytes
    for item in items:
        if item.dest.name.endswith(".tar.gz"):
            result.unpacked += _unpack(item.dest, fresh=item.dest in report.fetched)
    return result


def _unpack(archive: Path, *, fresh: bool) -> list[Path]:
    """Unpack a model/output archive beside itself when it was just fetched or a member is missing
    (an earlier pull that stopped between the download and the unpacking)."""
    from orchestrator.packaging import safe_extract

    names = safe_extract(archive, archive.parent, dry_run=True)
    if fresh or any(not (archive.parent / name).is_file() for name in names):
        safe_extract(archive, archive.parent)
        return [archive.parent / name for name in names]
    return []


def select_artifacts(found: list[Artifact], which: str) -> list[Artifact]:
    models = [a for a in found if a.kind == "model"]
    checkpoints = [a for a in found if a.kind == "checkpoint"]
    if which == "all":
        return found
    wanted = "last.ckpt" if which == "last" else "best.ckpt"
    chosen = [a for a in checkpoints if a.name == wanted]
    if not chosen and which == "best":
        chosen = [a for a in checkpoints if a.name == "last.ckpt"]
    return models + chosen


def verify_checkpoint(path: Path, source_checked: bool = False, *, name: str | None = None) -> None:
    """A checkpoint is a zip archive (torch.save); check it without importing torch.

    Its structure always: the central directory, and every member inside the file. Every
    member's CRC too (reading it all) unless ``source_checked``: bytes that already matched
    the source's checksum (S3's CRC32 or MD5) are the checkpoint the run wrote, atomically."""
    import zipfile

    label = name or str(path)
    hint = "It cannot be loaded; pull --last or --all to get another checkpoint."
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            outside = next((m.filename for m in members if m.header_offset + m.compress_size > size), None)
            bad = outside or (None if source_checked else archive.testzip())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"Checkpoint {label} is corrupt ({exc}).", hint) from None
    if not members:
        raise ArtifactError(f"Checkpoint {label} is corrupt (an empty archive).", hint)
    if bad is not None:
        raise ArtifactError(f"Checkpoint {label} is corrupt (bad entry {bad}).", hint)


def list_artifacts(run_id: str) -> list[Artifact]:
    store = open_store()
    run = store.get(run_id)
    return get_backend(run.target).artifacts(run)


# Comparing runs and sweeps live in sweeps.py and are part of this API (loaded on first use).
_SWEEPS = {"Comparison", "compare", "grid_points", "parse_grid", "sweep"}


def __getattr__(name: str):
    if name in _SWEEPS:
        from orchestrator import sweeps

        return getattr(sweeps, name)
    raise AttributeError(f"module 'orchestrator.api' has no attribute {name!r}")
