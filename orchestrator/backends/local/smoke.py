"""The dry run's smoke test: the packaged code, once, through the same container contract.

It lays out a throw-away container folder, runs the program with ``fast_dev_run``
(one train and one validation batch) and reports the program's own one-line error
when it fails. Nothing is written to the store.
"""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator.backends.base import LaunchSpec, SmokeResult
from orchestrator.backends.local.rundir import child_env, prepare
from orchestrator.backends.local.supervisor import run_program


def smoke_test(launch: LaunchSpec, workdir: Path) -> SmokeResult:
    params = launch.job.smoke_params(launch.params)
    # Remote (s3://) channels are not fetched for a smoke test; the job sees only local ones.
    local_data = {name: path for name, path in launch.data.items() if "://" not in path}
    spec = LaunchSpec(launch.job, launch.package, params, local_data)
    base = workdir / "container"
    cspec = prepare(base, "dry-run", spec)
    log = base / "dl" / "log.txt"
    started = time.monotonic()
    with open(log, "wb") as out:
        code, reason = run_program(base, cspec, child_env(base, cspec), out)
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    return SmokeResult(code == 0, seconds, reason or None, text)
