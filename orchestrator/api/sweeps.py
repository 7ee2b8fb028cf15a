"""Comparing runs side by side, and sweeps: one run per point of a parameter grid."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.api.launch import new_run_id, plan, start
from orchestrator.api.query import monitor_of, rank, refresh
from orchestrator.client import Client, using
from orchestrator.errors import UsageError
from orchestrator.options import LaunchOptions, parse_assignments
from orchestrator.store import Run


@dataclass
class Comparison:
    """Runs side by side: the parameters whose values differ, every final metric, and the metric
    that ranks them (the job's monitored one) when there is one."""

    runs: list[Run]
    differing: list[str]
    metrics: list[str]
    monitor: str | None = None
    mode: str = "max"

    def to_json(self) -> dict:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "differing": self.differing,
            "metrics": self.metrics,
            "runs": [
                {"id": r.id, "status": r.status.value, "sweep": r.sweep,
                 "params": {k: r.params.get(k) for k in self.differing}, "metrics": r.metrics}
                for r in self.runs
            ],
        }  # fmt: skip


def compare(run_ids: list[str] | None = None, *, sweep: str | None = None, client: Client | None = None) -> Comparison:
    """Compare runs by id, or every run of a sweep (then ranked by the job's monitored metric,
    best first; runs without it last). Params that are the same in every run are left out."""
    with using(client) as dl:
        store = dl.store
        runs = [refresh(dl, store.get(run_id)) for run_id in run_ids or []]
        if sweep:
            members = store.list(sweep=sweep)
            if not members:
                raise UsageError(
                    f"No sweep {sweep!r}.", "`dl sweep` prints the sweep id; `dl runs --json` shows each run's sweep."
                )
            runs += [refresh(dl, r) for r in reversed(members) if r.id not in {x.id for x in runs}]
        if not runs:
            raise UsageError("Nothing to compare.", "Give run ids (dl compare RUN RUN) or --sweep ID.")
        names = sorted({k for r in runs for k in r.params})
        differing = [k for k in names if len({repr(r.params.get(k)) for r in runs}) > 1]
        metrics = sorted({k for r in runs for k in r.metrics}, key=lambda k: (not k.startswith("val_"), k))
        monitor, mode = monitor_of(runs[0])
        if sweep and monitor and any(monitor in r.metrics for r in runs):
            runs = rank(runs, monitor, descending=mode == "max")
        return Comparison(runs, differing, metrics, monitor, mode)


def parse_grid(items: list[str] | None) -> dict[str, list[str]]:
    """``["lr=0.1,0.01", "width=8"]`` → ``{"lr": ["0.1", "0.01"], "width": ["8"]}``."""
    grid: dict[str, list[str]] = {}
    for key, text in parse_assignments(items, "--set").items():
        values = [v.strip() for v in text.split(",")]
        if any(not v for v in values):
            raise UsageError(f"--set {key}={text!r} has an empty value.", f"Example: --set {key}=0.1,0.01")
        if len(set(values)) != len(values):
            raise UsageError(f"--set {key}={text} lists a value twice.", "Give each value once.")
        grid[key] = values
    repeated = [item.partition("=")[0].strip() for item in items or []]
    twice = sorted({k for k in repeated if repeated.count(k) > 1})
    if twice:
        raise UsageError(f"--set {twice[0]} is given more than once.", f"List its values in one: --set {twice[0]}=A,B")
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """The cartesian product, in the order given: the last key varies fastest."""
    import itertools

    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def sweep(
    job_name: str,
    grid: dict[str, list[str]],
    *,
    parallel: int = 1,
    options: LaunchOptions | None = None,
    on_launch: Callable[[Run], None] | None = None,
    poll: float = 0.5,
    script_args: list[str] | None = None,
    root: str | None = None,
    client: Client | None = None,
    **choices,
) -> tuple[str, list[Run]]:
    """Launch one run per point of ``grid`` under one sweep id, at most ``parallel`` unfinished at once.

    Every run gets the same launch ``options`` (``choices``: LaunchOptions fields on top). Every
    point is planned (validated and packaged) before the first run starts, so a bad value starts
    nothing. Returns when the last run has been launched (it may still be running). A script
    (``job_name`` a .py file) gets ``script_args`` first in every run, then the point's pairs."""
    if parallel < 1:
        raise UsageError("--parallel must be at least 1.")
    points = grid_points(grid)
    options = LaunchOptions.of(options, **choices)
    with using(client) as dl:
        plans = [
            plan(job_name, overrides=point, options=options, script_args=script_args, root=root, client=dl)
            for point in points
        ]
        sweep_id = new_run_id(f"{plans[0].job.name}-sweep")
        launched: list[Run] = []
        for the_plan in plans:
            while sum(not refresh(dl, dl.store.get(r.id)).status.is_terminal for r in launched) >= parallel:
                time.sleep(poll)
            run = start(the_plan, sweep=sweep_id, client=dl)
            launched.append(run)
            if on_launch:
                on_launch(run)
    return sweep_id, launched
