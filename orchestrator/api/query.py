"""Reading and steering runs: list, show, wait, logs, metrics, checkpoints, stop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from orchestrator.backends import Capability, require, supports
from orchestrator.client import Client, using
from orchestrator.errors import ArtifactError, UsageError
from orchestrator.failures import FailureKind
from orchestrator.jobs import find_job
from orchestrator.store import Run, RunStatus


def refresh(dl: Client, run: Run) -> Run:
    """The run as its backend sees it now (a terminal run as it is), recorded in ``dl``'s store."""
    if run.status.is_terminal:
        return run
    return dl.backend(run.target).refresh(dl.store, run)


def list_runs(
    *,
    job: str | None = None,
    status: str | None = None,
    limit: int | None = 50,
    target: str | None = None,
    sort: str | None = None,
    sweep: str | None = None,
    failure_kind: str | None = None,
    client: Client | None = None,
) -> list[Run]:
    """Runs, newest first; with ``sort`` ("METRIC", "METRIC:desc" or "METRIC:asc"), ranked by that
    final metric (descending unless ``:asc``), runs without it last, then ``limit`` applied.
    ``failure_kind``: only runs that did not complete for that reason (failures.FailureKind)."""
    with using(client) as dl:
        store = dl.store
        wanted = RunStatus.parse(status) if status else None
        kind = FailureKind.parse(failure_kind) if failure_kind else None
        order = parse_sort(sort) if sort else None
        runs = store.list(job=job, status=wanted, target=target, limit=None if order else limit, sweep=sweep,
                          failure_kind=kind)  # fmt: skip
        by_target: dict[str, list[Run]] = {}
        for run in runs:
            if not run.status.is_terminal:
                by_target.setdefault(run.target, []).append(run)
        fresh: dict[str, Run] = {}
        for name, group in by_target.items():
            backend = dl.backend(name)
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


def epoch_metrics(run_id: str, *, client: Client | None = None) -> list[dict]:
    """The run's metrics per epoch, in order: ``[{"epoch": 0, "step": 7, "val_acc": 0.91, ...}, ...]``.

    Stored when a local run ends; while it runs (or if it died before storing them) they are read
    from its metrics.csv."""
    with using(client) as dl:
        store = dl.store
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


def best_epoch(run: Run, *, client: Client | None = None) -> dict | None:
    """The epoch where the job's monitored metric was best: {metric, value, epoch, step}; None if unknown."""
    monitor, mode = monitor_of(run)
    rows = [r for r in epoch_metrics(run.id, client=client) if monitor and r.get(monitor) is not None]
    if not rows:
        return None
    pick = max if mode == "max" else min
    row = pick(rows, key=lambda r: r[monitor])
    return {"metric": monitor, "value": row[monitor], "epoch": row["epoch"], "step": row.get("step")}


def show(run_id: str, *, client: Client | None = None) -> Run:
    with using(client) as dl:
        store = dl.store
        return refresh(dl, store.get(run_id))


def logs(run_id: str, *, follow: bool = False, client: Client | None = None) -> Iterator[str]:
    """The run's log; with ``follow``, keep yielding until the run ends. Without ``client``, the
    Client made for it is closed when the iterator ends (or is closed)."""
    dl = client or Client()
    try:
        chunks = _log(dl, run_id, follow)
    except BaseException:
        if client is None:
            dl.close()
        raise
    return chunks if client is not None else _closing(chunks, dl)


def _closing(chunks: Iterator[str], dl: Client) -> Iterator[str]:
    try:
        yield from chunks
    finally:
        dl.close()


def _log(dl: Client, run_id: str, follow: bool) -> Iterator[str]:
    store = dl.store
    run = store.get(run_id)
    backend = dl.backend(run.target)
    if follow:
        require(backend, Capability.FOLLOW_LOGS)
    path = backend.log_path(run)  # None: the backend reads its logs elsewhere (CloudWatch)
    if path is not None and not path.exists():
        if run.status.is_terminal:
            raise ArtifactError(
                f"Run {run.id} ended ({run.status.value}), but its log is gone from {path}.",
                "It was deleted or moved; `dl show` still has the run's record and metrics.",
            )
        raise ArtifactError(f"Run {run.id} has no log yet.", "It may still be starting; try again.")
    return backend.follow(run, store) if follow else backend.read_log(run)


def checkpoints(run: Run, *, client: Client | None = None) -> list[dict]:
    """The run's checkpoint manifest (file, step, epoch, monitored value, size, sha256, written_at)."""
    with using(client) as dl:
        backend = dl.backend(run.target)
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


def wait(run_id: str, *, timeout: float | None = None, poll: float = 0.2, client: Client | None = None) -> Run:
    """Block until the run reaches a terminal state (or ``timeout`` seconds pass)."""
    with using(client) as dl:
        store = dl.store
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = refresh(dl, store.get(run_id))
            if run.status.is_terminal or (deadline is not None and time.monotonic() >= deadline):
                return run
            time.sleep(poll)


def stop(run_id: str, *, grace: float = 60.0, client: Client | None = None) -> Run:
    """Stop a run gracefully (it saves a checkpoint). A finished run is returned unchanged."""
    with using(client) as dl:
        store = dl.store
        run = store.get(run_id)
        return require(dl.backend(run.target), Capability.STOP).stop(store, run, grace)


def import_runs(*, client: Client | None = None) -> tuple[list[str], list[str]]:
    """Import every run dl started on a target that can say so (SageMaker's dl-tagged jobs) and the
    store does not know; returns (run ids, one note per target that could not be asked)."""
    from orchestrator.rebuild import import_runs as import_all

    with using(client) as dl:
        return import_all(dl.store)
