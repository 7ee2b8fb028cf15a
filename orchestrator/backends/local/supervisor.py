"""The detached process that owns one local run.

Started by LocalBackend.submit as ``python -m orchestrator.backends.local.supervisor
DL_HOME RUN_ID`` in its own session, with stdout/stderr going to the run's log. It
marks the run InProgress, runs the program as SageMaker's toolkit would (contract.py),
forwards SIGTERM to it, and records the outcome: Completed (exit 0), Stopped (a stop was
asked for), or Failed with the program's one-line failure reason. Like the toolkit, it
leaves that reason in ``output/failure``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.backends import runtime_io
from orchestrator.backends.local import contract
from orchestrator.store import RunStatus, Store

EXIT_STOPPED = 143


def failure_reason(base: Path, returncode: int, log: Path) -> str:
    """One line for the store: the runtime's own failure line, else how the program ended."""
    failure = base / "output" / contract.FAILURE_FILE
    if failure.is_file():
        text = failure.read_text(errors="replace").strip()
        if text:
            return text.splitlines()[0][:1024]
    if returncode < 0:
        return f"The training program was killed by signal {-returncode}."
    tail = ""
    if log.is_file():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        tail = lines[-1] if lines else ""
    reason = f"The training program exited with code {returncode}" + (f": {tail}" if tail else ".")
    return reason[:1024]


def run_program(base: Path, cspec: contract.ContainerSpec, env: dict[str, str], stdout, on_start=None) -> int:
    """Run the container's program to completion; SIGTERM to this process is passed on to it.

    Afterwards ``output/success`` or ``output/failure`` is written as the toolkit writes it
    (a failure file the program wrote itself is kept).
    """
    cmd = contract.command(sys.executable, cspec)
    child = subprocess.Popen(
        cmd,
        cwd=base / "code",
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
    )
    previous = signal.getsignal(signal.SIGTERM)

    def forward(signum, frame):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, forward)
    try:
        if on_start:
            on_start(child)
        returncode = child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    reason = failure_reason(base, returncode, Path(stdout.name)) if returncode else ""
    output = Path(stdout.name).read_text(errors="replace") if returncode else ""
    contract.report_outcome(base, cmd, returncode, stdout=output)
    return returncode, reason


def _log_stream(base: Path):
    from orchestrator.backends.local import log_file

    return open(log_file(base), "ab", buffering=0)


def supervise(home: Path, run_id: str) -> int:
    from orchestrator.backends.local import child_env, container_spec, process

    store = Store(home)
    run = store.get(run_id)
    base = Path(run.backend_state["run_dir"])
    cspec = container_spec(run_id, run.params, run.data, run.backend_state["package_uri"])
    stop_seen = False

    def note_stop(signum, frame):
        nonlocal stop_seen
        stop_seen = True

    signal.signal(signal.SIGTERM, note_stop)
    store.mark_in_progress(run_id)
    print(f"dl: run {run_id} started {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)

    def started(child):
        store.merge_backend_state(run_id, child_pid=child.pid, child_start=process.start_time(child.pid))

    returncode, reason = run_program(base, cspec, child_env(base, cspec), _log_stream(base), on_start=started)
    outcome = runtime_io.read_outcome(base / "output" / "data")
    metrics = outcome.get("final", {})
    # Every epoch so far (a resumed run's file holds its earlier epochs too): replaces the run's rows.
    # Stored before the run turns terminal, so whoever sees it finished also sees its curves.
    try:
        store.replace_epoch_metrics(run_id, runtime_io.read_epoch_rows(base / "output" / "data"))
    except Exception as exc:  # never let bookkeeping keep a finished run InProgress
        print(f"dl: could not store per-epoch metrics ({exc}); metrics.csv has them", flush=True)
    stop_requested = stop_seen or store.get(run_id).backend_state.get("stop_requested")
    if returncode == 0:
        store.mark_finished(run_id, RunStatus.COMPLETED, metrics=metrics)
        status = "Completed"
    elif stop_requested or returncode == EXIT_STOPPED:
        store.mark_finished(run_id, RunStatus.STOPPED, metrics=metrics)
        status = "Stopped"
    else:
        store.mark_finished(run_id, RunStatus.FAILED, failure_reason=reason, metrics=metrics)
        status = f"Failed: {reason}"
    print(f"dl: run {run_id} {status}", flush=True)
    return 0


def main() -> int:
    home, run_id = Path(sys.argv[1]), sys.argv[2]
    return supervise(home, run_id)


if __name__ == "__main__":
    sys.exit(main())
