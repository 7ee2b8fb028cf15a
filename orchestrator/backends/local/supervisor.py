"""The detached process that owns one local run.

Started by LocalBackend.submit as ``python -m orchestrator.backends.local.supervisor
DL_HOME RUN_ID`` in its own session (its pid is the run's process group), with
stdout/stderr going to the run's log. It takes the run folder's trainer lock
(``dl/trainer.lock``; a second trainer never starts while it is held), records its pid,
marks the run InProgress, runs the program as SageMaker's toolkit would (contract.py) with
the lock inherited and its pid recorded, forwards SIGTERM to it, and records the outcome
(``settle``): Completed (exit 0, or training finished), Stopped (a stop was asked for), or
Failed with the program's one-line failure reason. Like the toolkit, it leaves that reason
in ``output/failure``. Should the supervisor die, the trainer goes on holding the lock; the
next look at the run (LocalBackend.refresh) settles it once nobody holds the lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.backends import runtime_io
from orchestrator.backends.local import contract, process
from orchestrator.backends.local.rundir import child_env, container_spec, log_file
from orchestrator.failures import of_program
from orchestrator.store import Run, RunStatus, Store

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


def run_program(
    base: Path, cspec: contract.ContainerSpec, env: dict[str, str], stdout, on_start=None, pass_fds=()
) -> tuple[int, str]:
    """Run the container's program to completion; SIGTERM to this process is passed on to it.
    ``pass_fds`` are descriptors the program inherits (the trainer lock).

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
        pass_fds=pass_fds,
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
    return open(log_file(base), "ab", buffering=0)


def trainer_lock(base: Path) -> Path:
    """The lock a run's supervisor takes and its trainer inherits: held while either lives."""
    return base / "dl" / "trainer.lock"


def settle(
    store: Store,
    run_id: str,
    base: Path | None,
    *,
    returncode: int | None = None,
    reason: str | None = None,
    stop_seen: bool = False,
) -> Run:
    """Record a run's outcome from what its folder says; the run unchanged if already terminal.

    Called by the supervisor when its trainer exits (``returncode``, ``reason``), and by
    whoever finds a run that no process accounts for any more (``returncode`` None). A
    trainer that finished training (the runtime wrote summary.json, after the model) makes
    the run Completed, even if a stop arrived afterwards or the trainer was then killed.
    """
    run = store.get(run_id)
    if run.status.is_terminal:
        return run
    state = run.backend_state
    finished = base is not None and (base / "output" / "data" / runtime_io.SUMMARY_JSON).is_file()
    metrics: dict = {}
    if base is not None:
        metrics = runtime_io.read_outcome(base / "output" / "data").get("final", {})
        # Every epoch so far (a resumed run's file holds its earlier epochs too): replaces the run's
        # rows. Stored before the run turns terminal, so whoever sees it finished sees its curves.
        try:
            store.replace_epoch_metrics(run_id, runtime_io.read_epoch_rows(base / "output" / "data"))
        except Exception as exc:  # never let bookkeeping keep a finished run InProgress
            print(f"dl: could not store per-epoch metrics ({exc}); metrics.csv has them", flush=True)
    if returncode == 0 or finished:
        store.mark_finished(run_id, RunStatus.COMPLETED, metrics=metrics)
    elif stop_seen or state.get("stop_requested") or returncode == EXIT_STOPPED:
        store.mark_finished(run_id, RunStatus.STOPPED, metrics=metrics)
    else:
        # The trainer's exit says the kind; found later with nobody to say, the reason does (failures.default_for).
        kind = of_program(returncode, reason or "") if returncode is not None else None
        reason = reason or unaccounted(base, state)
        store.mark_finished(run_id, RunStatus.FAILED, failure_reason=reason, metrics=metrics, failure_kind=kind)
    return store.get(run_id)


def unaccounted(base: Path | None, state: dict) -> str:
    """Why a run ended with nobody left to say how: the trainer's own failure line if it wrote
    one, else which of the run's processes were gone before an outcome was recorded."""
    failure = base / "output" / contract.FAILURE_FILE if base is not None else None
    if failure is not None and failure.is_file():
        text = failure.read_text(errors="replace").strip()
        if text:
            return text.splitlines()[0][:1024]
    if state.get("pid") is None:
        return "The launch ended before the run's supervisor started, so nothing ran."
    if state.get("trainer_pid") is None:
        return "The run's supervisor ended before it started the trainer (killed, or the machine restarted)."
    return "The run's supervisor and trainer ended without recording an outcome (killed, or the machine restarted)."


def supervise(home: Path, run_id: str) -> int:
    """Run ``run_id`` to its end and record the outcome. The store connection is closed however
    this ends, so the last process out leaves every commit in dl.db itself (not only in its WAL)."""
    with Store(home) as store:
        return _supervise(store, run_id)


def _supervise(store: Store, run_id: str) -> int:
    run = store.get(run_id)
    base = Path(run.backend_state["run_dir"])
    cspec = container_spec(
        run_id, run.params, run.data, run.backend_state["package_uri"], run.backend_state.get("program")
    )
    stop_seen = False

    def note_stop(signum, frame):
        nonlocal stop_seen
        stop_seen = True

    signal.signal(signal.SIGTERM, note_stop)
    # Held from here until the trainer (which inherits it) and this process have both exited.
    lock = process.hold_lock(trainer_lock(base))
    if lock is None:
        print(f"dl: a trainer of run {run_id} is still running here; not starting a second one", flush=True)
        return 1
    store.merge_backend_state(run_id, pid=os.getpid(), pid_created=process.start_time(os.getpid()), pgid=os.getpgrp())
    if not store.mark_in_progress(run_id):
        current = store.get(run_id)
        print(f"dl: run {run_id} is already {current.status.value}; not starting it", flush=True)
        return 1
    print(f"dl: run {run_id} started {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    if stop_seen:  # stopped before the trainer started
        settle(store, run_id, base, stop_seen=True)
        print(f"dl: run {run_id} Stopped", flush=True)
        return 0

    def started(child):
        store.merge_backend_state(run_id, trainer_pid=child.pid, trainer_created=process.start_time(child.pid))

    env = child_env(base, cspec)
    returncode, reason = run_program(base, cspec, env, _log_stream(base), on_start=started, pass_fds=(lock,))
    run = settle(store, run_id, base, returncode=returncode, reason=reason, stop_seen=stop_seen)
    status = run.status.value + (f": {run.failure_reason}" if run.failure_reason else "")
    print(f"dl: run {run_id} {status}", flush=True)
    return 0


def main() -> int:
    home, run_id = Path(sys.argv[1]), sys.argv[2]
    return supervise(home, run_id)


if __name__ == "__main__":
    sys.exit(main())
