"""Scheduled retraining: a schedule launches a pinned package on a cron or rate expression.

    from orchestrator import scheduling
    scheduling.create("weekly", "mnist", expression="0 3 * * 1", overrides={"max_epochs": "5"})
    scheduling.tick()          # local target: start what is due now (what `dl schedule run` loops on)

The package is built once, at create (or ``update``), and pinned by its hash: a schedule
retrains the code it was created with. What differs per target is its backend's Scheduler
(backends/base.py): where the schedule lives besides the store, and who fires it. A cloud
target's schedule lives there (EventBridge Scheduler for sagemaker) and the cloud fires it;
where ``fires_here``, ``tick`` decides. Its decisions are kept in the store (the ``firings`` table), so they survive
restarts: a fire time is decided once, a run never starts while the schedule's previous run
still goes (the firing is recorded as skipped), and after downtime one catch-up run starts,
not one per missed fire time. The runs a schedule starts are ordinary runs (``run.schedule``).
A fire time claimed by a scheduler that died before starting its run is settled by the next
tick (``settle_abandoned``) under the same policy: started late, once, and said so in the
firing's note; or recorded missed when a later fire time is due (its catch-up run covers it)
or the schedule is paused.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from orchestrator import cronexpr, faults
from orchestrator.backends import Capability, get_backend, require
from orchestrator.backends.base import Scheduler
from orchestrator.client import Client, using
from orchestrator.errors import DlError, UsageError
from orchestrator.options import LaunchOptions
from orchestrator.store import Run, RunStatus, Schedule

# Cloud runs are named NAME-<EventBridge execution id, 36 characters>, within SageMaker's 63.
NAME_MAX = 63 - 37
PROMOTE_MODES = ("max", "min")


# A claim whose process cannot be told gone is taken as abandoned after this long (a start takes seconds).
ABANDONED_AFTER_S = 600.0


@dataclass
class Decision:
    """What ``tick`` did for one schedule: started (run_id), skipped (note says why), failed, or
    missed (an abandoned claim that a later catch-up run covers, or a paused schedule's)."""

    schedule: str
    due_at: float
    action: str
    run_id: str | None = None
    missed: int = 0
    note: str | None = None


@dataclass
class ScheduleView:
    """``show``: the schedule, its next fire times, and its latest firings and runs."""

    schedule: Schedule
    next_fires: list[datetime]
    firings: list = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]*", name or ""):
        raise UsageError(
            f"Schedule name {name!r} is not valid.", "Use letters, digits and hyphens, starting with a letter."
        )
    if len(name) > NAME_MAX:
        raise UsageError(
            f"Schedule name {name!r} is {len(name)} characters; the limit is {NAME_MAX}.",
            "Its runs are named NAME-<firing id> within SageMaker's 63 characters; pick a shorter name.",
        )
    return name


def parse_promote(text: str | None) -> tuple[str | None, str | None]:
    """``val_acc:max`` → ("val_acc", "max")."""
    if not text:
        return None, None
    metric, _, mode = text.partition(":")
    mode = mode or "max"
    if not metric or mode not in PROMOTE_MODES:
        raise UsageError(f"--promote-if {text!r} is not METRIC:max or METRIC:min.", "Example: --promote-if val_acc:max")
    return metric, mode


def check_expression(expression: str, tz: str, now: float | None = None) -> tuple[str, list[datetime]]:
    """The EventBridge form of ``expression`` and its next three fire times; UsageError when invalid."""
    parsed = cronexpr.parse(expression)
    cronexpr.timezone(tz)
    moment = _dt(now or time.time())
    return parsed.aws, cronexpr.next_fires(parsed, tz, moment, 3, anchor=moment)


def scheduler_for(target: str, dl: Client | None = None) -> Scheduler:
    """The Scheduler of ``target``'s backend (``dl``'s, else a new one); a one-line BackendError when it has none."""
    backend = dl.backend(target) if dl is not None else get_backend(target)
    return require(backend, Capability.SCHEDULES).scheduler()


def fires_here(target: str, dl: Client | None = None) -> bool:
    """Whether `dl schedule run` on this machine starts ``target``'s scheduled runs."""
    return scheduler_for(target, dl).fires_here


def create(
    name: str,
    job: str,
    *,
    expression: str,
    timezone: str = "UTC",
    overrides: dict[str, str] | None = None,
    options: LaunchOptions | None = None,
    promote: str | None = None,
    retries: int | None = None,
    window_minutes: int | None = None,
    now: float | None = None,
    client: Client | None = None,
    **choices,
) -> Schedule:
    """Validate, build and pin the package, and create the schedule (outside the store too, where
    the target keeps schedules: EventBridge for sagemaker). ``choices``: LaunchOptions fields on
    top of ``options`` (``target="local"``)."""
    from orchestrator import api

    with using(client) as dl:
        _check_name(name)
        aws_expression, _ = check_expression(expression, timezone, now)
        metric, mode = parse_promote(promote)
        store = dl.store
        if any(s.name == name for s in store.list_schedules()):
            raise UsageError(f"A schedule named {name!r} already exists.", f"Update it: dl schedule update {name}")
        options = LaunchOptions.of(options, **choices)
        target = options.target or dl.settings().target
        scheduler = scheduler_for(target, dl)
        data = dict(options.data)
        from_ref = options.from_run or ""
        source, _, which = from_ref.partition(":")
        from_schedule = bool(source) and (source == name or any(s.name == source for s in store.list_schedules()))
        scheduler.check(retries, window_minutes)
        if from_schedule:
            other = next((s for s in store.list_schedules() if s.name == source), None)
            if other is not None and other.target != target:
                raise UsageError(
                    f"Schedule {source} runs on {other.target}; its best pointer is not where {target} runs read.",
                    f"Use --from with a run id (dl runs --job {other.job}), or a schedule on {target}.",
                )
            if which not in ("", "best"):
                raise UsageError(
                    f"--from {from_ref}: a schedule keeps only its best checkpoint.", f"Use --from {source}:best"
                )
            if api.INIT_CHANNEL in data:
                raise UsageError(f"--from uses the data channel {api.INIT_CHANNEL!r}; --data init=... clashes.")
            data[api.INIT_CHANNEL] = scheduler.pointer(source, options)
            options = options.with_(data=data, from_run=None)
        the_plan = api.plan(job, overrides=overrides, options=options.with_(target=target), client=dl)
        spec = {
            "params": the_plan.params,
            "options": the_plan.options.to_json(),
            "overrides": overrides or {},
            "job_dir": the_plan.job.ref,
            "files": package_files(the_plan.package.path),
            "from_schedule": source if from_schedule else None,
            "retries": retries,
            "window_minutes": window_minutes,
        }
        schedule = Schedule(
            name=name,
            job=the_plan.job.name,
            target=target,
            expression=aws_expression,
            timezone=timezone,
            package_hash=the_plan.package.sha256,
            created_at=now or time.time(),
            spec=spec,
            promote_metric=metric,
            promote_mode=mode,
        )
        schedule.cloud = scheduler.create(schedule, the_plan)
        store.insert_schedule(schedule)
        return store.get_schedule(name)


def package_files(path: Path) -> dict[str, str]:
    """{file name: sha256} of a package, for the diff `dl schedule update` shows."""
    import hashlib
    import tarfile

    out = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                out[member.name] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    return out


def list_schedules(*, client: Client | None = None) -> list[Schedule]:
    with using(client) as dl:
        return dl.store.list_schedules()


def show(name: str, *, now: float | None = None, runs: int = 5, client: Client | None = None) -> ScheduleView:
    """The schedule, next fire times, latest firings and runs (cloud runs discovered first)."""
    from orchestrator import api

    with using(client) as dl:
        store = dl.store
        schedule = store.get_schedule(name)
        sync(dl, names=[name])  # the runs its cloud started, where the cloud fires it
        review(dl, schedule)
        schedule = store.get_schedule(name)
        moment = _dt(now or time.time())
        upcoming = [] if schedule.status != "active" else next_fire_times(schedule, moment)
        found = [api.refresh(dl, r) for r in store.list(schedule=name, limit=runs)]
        return ScheduleView(store.get_schedule(name), upcoming, store.firings(name, runs), found)


def next_fire_times(schedule: Schedule, after: datetime | None = None, n: int = 3) -> list[datetime]:
    """The next ``n`` fire times after ``after`` (default now), in the schedule's time zone."""
    after = after or _dt(time.time())
    return cronexpr.next_fires(schedule.expression, schedule.timezone, after, n, anchor=_dt(schedule.created_at))


def pause(name: str, *, now: float | None = None, client: Client | None = None) -> Schedule:
    return _set_status(name, "paused", now, client)


def resume(name: str, *, now: float | None = None, client: Client | None = None) -> Schedule:
    """Fire again from ``now`` on: fire times that passed while paused are not caught up."""
    return _set_status(name, "active", now, client)


def _set_status(name: str, status: str, now: float | None, client: Client | None) -> Schedule:
    with using(client) as dl:
        store = dl.store
        schedule = store.get_schedule(name)
        scheduler_for(schedule.target, dl).set_state(schedule, enabled=status == "active")
        now = now if now is not None else time.time()
        store.update_schedule(name, status=status, updated_at=now, last_fire_at=max(now, schedule.last_fire_at or 0))
        return store.get_schedule(name)


def delete(name: str, *, client: Client | None = None) -> None:
    """Delete the schedule (outside the store too); the runs it started stay."""
    with using(client) as dl:
        schedule = dl.store.get_schedule(name)
        scheduler_for(schedule.target, dl).delete(schedule)
        dl.store.delete_schedule(name)


@dataclass
class UpdateResult:
    schedule: Schedule
    added: list[str]
    removed: list[str]
    changed: list[str]

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.changed)


def update(name: str, *, client: Client | None = None) -> UpdateResult:
    """Repackage the job folder and pin the new package; returns the files that differ."""
    with using(client) as dl:
        return _update(dl, name)


def _update(dl: Client, name: str) -> UpdateResult:
    from orchestrator import api, settings
    from orchestrator.jobs import find_job
    from orchestrator.packaging import build_package

    store = dl.store
    schedule = store.get_schedule(name)
    job = find_job(schedule.spec.get("job_dir") or schedule.job)
    allow = list(LaunchOptions.from_json(schedule.spec["options"]).allow_secrets) or None
    package = build_package(job, dl.home / "packages", settings.max_package_mb(), allow=allow)
    old, new = schedule.spec.get("files") or {}, package_files(package.path)
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    result = UpdateResult(schedule, added, removed, changed)
    if package.sha256 == schedule.package_hash:
        return result
    spec = {**schedule.spec, "files": new, "job_dir": job.ref}
    the_plan = api.Plan(job, spec["params"], package, LaunchOptions.from_json(spec["options"]))
    scheduler_for(schedule.target, dl).replace_target(schedule, the_plan)
    store.update_schedule(name, package_hash=package.sha256, spec=spec, updated_at=time.time())
    result.schedule = store.get_schedule(name)
    return result


# -- the tick scheduler (targets whose schedules fire here) ------------------------------------


def fire(dl: Client, schedule: Schedule, due_at: float) -> Run:
    """Start one run of ``schedule`` with its pinned package, through ``dl``."""
    from orchestrator import api, settings
    from orchestrator.jobs import find_job
    from orchestrator.packaging import build_package, cached_package

    spec = schedule.spec
    options = LaunchOptions.from_json(spec["options"])
    cache = dl.home / "packages"
    package = cached_package(cache, schedule.package_hash)
    job = find_job(spec.get("job_dir") or schedule.job)
    if package is None:  # gone or damaged: the job folder may still give the same bytes
        package = build_package(job, cache, settings.max_package_mb(), allow=list(options.allow_secrets) or None)
        if package.sha256 != schedule.package_hash:
            raise UsageError(
                f"The package pinned by schedule {schedule.name} ({schedule.package_hash[:12]}) is gone or"
                " damaged, and the job folder now packages differently.",
                f"Repackage it: dl schedule update {schedule.name}",
            )
    the_plan = api.Plan(job, dict(spec["params"]), package, options)
    return api.start(the_plan, name=api.new_run_id(schedule.name, now=due_at), schedule=schedule.name, client=dl)


def tick(now: float | None = None, *, start=None, client: Client | None = None) -> list[Decision]:
    """Decide every active schedule that fires here once at ``now``: start what is due, record skips.

    Safe to call from several processes: each fire time is claimed in the store first.
    ``start(client, schedule, due_at) -> Run`` starts a run (default ``fire``)."""
    with using(client) as dl:
        return _tick(dl, now, start or fire)


def _tick(dl: Client, now: float | None, start) -> list[Decision]:
    from orchestrator import api

    store = dl.store
    now = now if now is not None else time.time()
    decisions: list[Decision] = []
    for schedule in store.list_schedules():
        if not fires_here(schedule.target, dl):
            continue  # their cloud fires those; `dl runs --sync` and `dl schedule show` review them
        review(dl, schedule)
        if schedule.status != "active":
            continue
        since = _dt(schedule.last_fire_at or schedule.created_at)
        expr = cronexpr.parse(schedule.expression)
        due, count = cronexpr.latest_due(expr, schedule.timezone, since, _dt(now), anchor=_dt(schedule.created_at))
        decisions += settle_abandoned(dl, schedule, due, start=start or fire)
        if schedule.status != "active" or due is None:
            continue
        due_at = due.timestamp()
        previous = store.list(schedule=schedule.name, limit=1)
        running = previous and not api.refresh(dl, previous[0]).status.is_terminal
        if running:
            note = f"previous run {previous[0].id} is still {store.get(previous[0].id).status.value}"
            if store.claim_firing(schedule.name, due_at, "skipped", note):
                decisions.append(Decision(schedule.name, due_at, "skipped", None, count - 1, note))
            continue
        if not store.claim_firing(schedule.name, due_at, "starting", _claim_note()):
            continue  # another scheduler decided this fire time
        faults.fault("after-claim")
        try:
            run = start(dl, schedule, due_at)
        except DlError as exc:
            store.settle_firing(schedule.name, due_at, "failed", None, exc.message)
            decisions.append(Decision(schedule.name, due_at, "failed", None, count - 1, exc.message))
            continue
        note = f"catch-up for {count} missed fire times" if count > 1 else None
        store.settle_firing(schedule.name, due_at, "started", run.id, note)
        decisions.append(Decision(schedule.name, due_at, "started", run.id, count - 1, note))
    return decisions


def _claim_note() -> str:
    """Who claims a fire time, so that the next tick can tell when the claimer is gone."""
    return f"claimed by pid {os.getpid()}"


def _claimer_gone(claim) -> bool:
    """A claim is abandoned when its process no longer exists, or (a pid since reused, a dl that
    did not name itself) when it is older than ABANDONED_AFTER_S; never one of this process."""
    found = re.match(r"claimed by pid (\d+)", claim.note or "")
    pid = int(found.group(1)) if found else None
    if pid == os.getpid():
        return False
    if pid is not None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # another user's process holds that pid now
    return time.time() - claim.decided_at > ABANDONED_AFTER_S


def settle_abandoned(dl: Client, schedule: Schedule, due: datetime | None, *, start=None) -> list[Decision]:
    """Settle the schedule's fire times still "starting" whose claimer is gone (killed between the
    claim and the start). Its run, if it got that far, is recorded; else it starts now, late and
    once, unless ``due`` (the latest fire time due now) is later, whose catch-up run covers it, or
    the schedule is paused: then it is missed. The previous run still going skips it, as always."""
    from orchestrator import api

    decisions = []
    store = dl.store
    for claim in store.firings(schedule.name, 20, decision="starting"):
        if claim.run_id is not None or not _claimer_gone(claim):
            continue
        was = claim.note.removeprefix("claimed by ") if claim.note else "an earlier dl"
        gone = f"the scheduler that claimed it ({was}) stopped before recording its run"
        if not store.take_over_firing(claim, _claim_note()):
            continue  # another tick settles it
        made = [r for r in store.list(schedule=schedule.name, limit=5) if r.created_at >= claim.decided_at]
        if made:  # it got as far as starting the run
            action, run_id, note = "started", made[-1].id, f"recorded late: {gone}"
        elif schedule.status != "active":
            action, run_id, note = "missed", None, f"{gone}; the schedule is paused"
        elif due is not None and due.timestamp() > claim.due_at:
            action, run_id, note = "missed", None, f"{gone}; the catch-up run for {due:%Y-%m-%d %H:%M %Z} covers it"
        else:
            previous = store.list(schedule=schedule.name, limit=1)
            if previous and not api.refresh(dl, previous[0]).status.is_terminal:
                action, run_id = "skipped", None
                note = f"{gone}; previous run {previous[0].id} is still {store.get(previous[0].id).status.value}"
            else:
                try:
                    run_id = (start or fire)(dl, schedule, claim.due_at).id
                    action, note = "started", f"started late, at {_dt(time.time()):%Y-%m-%d %H:%M:%S %Z}: {gone}"
                except DlError as exc:
                    action, run_id, note = "failed", None, f"{gone}; starting it late failed: {exc.message}"
        store.settle_firing(schedule.name, claim.due_at, action, run_id, note)
        decisions.append(Decision(schedule.name, claim.due_at, action, run_id, 0, note))
    return decisions


# -- promotion -------------------------------------------------------------------------------


def review(dl: Client, schedule: Schedule) -> list[Run]:
    """Decide promotion for the schedule's finished runs that have no decision yet (oldest first)."""
    from orchestrator import api

    store = dl.store
    decided = []
    if not schedule.promote_metric:
        return decided
    for run in reversed(store.list(schedule=schedule.name, limit=50)):
        if run.promotion:
            continue
        run = api.refresh(dl, run)
        if not run.status.is_terminal:
            continue
        decided.append(promote(dl, store.get_schedule(schedule.name), run))
    return decided


def promote(dl: Client, schedule: Schedule, run: Run) -> Run:
    """Move the schedule's ``best`` pointer to ``run`` when its metric improved; record the decision."""
    store = dl.store
    metric, mode = schedule.promote_metric, schedule.promote_mode or "max"
    value = run.metrics.get(metric) if run.status is RunStatus.COMPLETED else None
    best = store.get(schedule.best_run) if schedule.best_run and store.exists(schedule.best_run) else None
    best_value = best.metrics.get(metric) if best else None
    decision = {"metric": metric, "mode": mode, "value": value, "best_run": best.id if best else None,
                "best_value": best_value, "promoted": False}  # fmt: skip
    if value is None:
        decision["reason"] = f"no {metric}" if run.status is RunStatus.COMPLETED else f"run {run.status.value}"
    elif best_value is not None and not (value > best_value if mode == "max" else value < best_value):
        decision["reason"] = f"{metric} {value:g} did not beat {best_value:g}"
    else:
        try:
            decision["pointer"] = _move_pointer(dl, schedule, run)
        except DlError as exc:
            decision["reason"] = f"could not copy the checkpoint: {exc.message}"
        else:
            decision["promoted"] = True
            decision["reason"] = "first run" if best_value is None else f"{metric} {value:g} beat {best_value:g}"
            store.update_schedule(schedule.name, best_run=run.id)
    store.update(run.id, promotion=decision)
    return store.get(run.id)


def _move_pointer(dl: Client, schedule: Schedule, run: Run) -> str:
    """Copy the run's best checkpoint to the schedule's fixed ``best`` location; return it."""
    from orchestrator import api
    from orchestrator.errors import ArtifactError

    found = [a for a in api.select_artifacts(dl.backend(run.target).artifacts(run), "best") if a.kind == "checkpoint"]
    if not found:
        raise ArtifactError(f"Run {run.id} has no checkpoint.")
    return scheduler_for(schedule.target, dl).copy_to_pointer(schedule, run, found[0].location)


# -- cloud runs --------------------------------------------------------------------------------


def sync(client: Client | None = None, *, names: list[str] | None = None) -> list[Run]:
    """Import the runs that clouds started for their schedules (``names``: only those schedules;
    without, every registered target whose schedules do not fire here is asked, so schedules
    made on another machine are found too)."""
    from orchestrator.backends import REGISTRY, supports

    with using(client) as dl:
        schedules = dl.store.list_schedules()
        imported: list[Run] = []
        for target in REGISTRY:
            backend = dl.backend(target)
            if not supports(backend, Capability.SCHEDULES) or backend.scheduler().fires_here:
                continue
            wanted = [s for s in schedules if s.target == target and (names is None or s.name in names)]
            if not wanted and names is not None:
                continue
            imported += backend.scheduler().discover(dl.store, wanted)
            for schedule in wanted:
                review(dl, schedule)
        return imported


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
