"""dl's Python API: everything the CLI does, as functions.

    from orchestrator import api
    run = api.launch("mnist", overrides={"lr": "0.001"})
    api.wait(run.id); print(api.show(run.id).metrics)

Split by concept: launch.py (plan, start, resume), query.py (list, show, logs, metrics, stop),
pull.py (models and checkpoints to this machine), sweeps.py (compare runs, parameter grids).
Every function opens the store under DL_HOME; none imports torch, lightning or boto3 unless
the work needs it.
"""

from __future__ import annotations

from orchestrator.api.launch import (
    INIT_CHANNEL,
    Plan,
    default_target,
    describe,
    git_info,
    launch,
    new_run_id,
    plan,
    resume,
    smoke_test,
    start,
    warm_start_source,
)
from orchestrator.api.pull import (
    PULL_CHOICES,
    PullItem,
    PullResult,
    list_artifacts,
    pull,
    select_artifacts,
    verify_checkpoint,
)
from orchestrator.api.query import (
    best_epoch,
    checkpoints,
    epoch_metrics,
    import_runs,
    list_runs,
    logs,
    monitor_of,
    parse_sort,
    rank,
    refresh,
    show,
    stale_checkpoint_warning,
    stop,
    wait,
)
from orchestrator.api.sweeps import Comparison, compare, grid_points, parse_grid, sweep
from orchestrator.backends import LaunchSpec
from orchestrator.jobs import find_job
from orchestrator.options import parse_assignments

__all__ = [
    "INIT_CHANNEL", "PULL_CHOICES", "Comparison", "LaunchSpec", "Plan", "PullItem", "PullResult", "best_epoch",
    "checkpoints", "compare", "default_target", "describe", "epoch_metrics", "find_job", "git_info", "grid_points",
    "import_runs", "launch", "list_artifacts", "list_runs", "logs", "monitor_of", "new_run_id", "parse_assignments",
    "parse_grid", "parse_sort", "plan", "pull", "rank", "refresh", "resume", "select_artifacts", "show", "smoke_test",
    "stale_checkpoint_warning", "start", "stop", "sweep", "verify_checkpoint", "wait", "warm_start_source",
]  # fmt: skip
