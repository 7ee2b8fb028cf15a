"""The local backend: a run is a folder laid out like SageMaker's /opt/ml and a supervisor process.

``reserve`` claims ``DL_HOME/runs/<id>/`` (a new run never uses a folder it did not create),
``submit`` lays it out (see contract.py), extracts the package into ``code/`` and starts a
detached supervisor (supervisor.py) that runs the program, streams its output to
``dl/log.txt`` and records the outcome in the store. The run survives the terminal that
launched it. Its processes (launcher, supervisor, trainer: pid and creation time each) and
the trainer lock say whether it lives; ``refresh`` settles a run none of them accounts for.
``stop`` sends SIGTERM (the runtime saves ``last.ckpt`` and exits), to the trainer directly
when its supervisor is gone, and SIGKILLs the process group after the grace period.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from orchestrator.backends.base import Artifact, LaunchSpec, SmokeResult
from orchestrator.backends.local import contract, process, smoke, supervisor
from orchestrator.backends.local.rundir import log_file, prepare, run_dir, run_dir_root
from orchestrator.errors import ArtifactError, BackendError, UsageError
from orchestrator.fsutil import replacing
from orchestrator.store import Run, Store

_CHANNEL_NAME_OK = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."


def check_requirements(spec: LaunchSpec) -> None:
    """The local Python must already have what the package's requirements.txt asks for."""
    import re
    from importlib.metadata import PackageNotFoundError, distribution
    from importlib.util import find_spec

    for module, extra in (("torch", "train"), ("lightning", "train")):
        if find_spec(module) is None:
            raise BackendError(
                f"{module} is not installed in this Python ({sys.executable}).",
                f"Install dl's local training extra: pip install -e '.[{extra}]'.",
            )
    req = spec.job.path / "requirements.txt"
    if not req.is_file():
        return
    for line in req.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", text)
        if not match:
            continue
        try:
            distribution(match.group(1))
        except PackageNotFoundError:
            raise BackendError(
                f"Job {spec.job.name} needs {text}, which is not installed in this Python.",
                f"Install it: pip install '{text}'.",
            ) from None


def check_data(data: dict[str, str]) -> None:
    for name, path in data.items():
        if not name or any(c not in _CHANNEL_NAME_OK for c in name):
            raise UsageError(
                f"Bad channel name {name!r}.", "Use letters, digits, '-', '_' or '.', e.g. --data train=PATH."
            )
        if "://" in path:
            raise UsageError(
                f"Channel {name} points at {path}; the local target reads local folders only.",
                "Download it first, or launch on the sagemaker target.",
            )
        if not Path(path).exists():
            raise UsageError(f"Data path for channel {name} does not exist: {path}.", "Check the path after --data.")


# What a run's backend_state says about its processes: (pid, creation time) of each.
_PROCESS_KEYS = ("pid", "pid_created", "pgid", "trainer_pid", "trainer_created", "launcher_pid", "launcher_created")


def _launcher() -> dict:
    """This process as the run's launcher: recorded with the run's row (``reserve``) and on a
    resume, so that a launch that dies before its supervisor starts is noticed."""
    return {"launcher_pid": os.getpid(), "launcher_created": process.start_time(os.getpid())}


@contextlib.contextmanager
def _interrupts_deferred():
    """SIGINT inside the block is raised as KeyboardInterrupt when the block ends, so that a
    started supervisor is always recorded. Outside the main thread there is nothing to defer."""
    caught: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    except ValueError:  # not the main thread: no signal arrives here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


class LocalBackend:
    """Features: stop, follow logs, pull, smoke test, resume, reserve, schedules (base.py)."""

    name = "local"
    public_state_keys: tuple[str, ...] = ()

    accepted_options: frozenset[str] = frozenset()  # this machine: no choice of machine, image or limits

    def __init__(self, settings=None) -> None:
        """``settings``: as for every backend (Client.backend passes its resolver); this machine needs none."""

    def check(self, spec: LaunchSpec) -> None:
        check_data(spec.data)
        check_requirements(spec)

    def describe(self, spec: LaunchSpec, run_id: str, git_commit: str | None) -> dict:
        store_home = run_dir_root()
        return {
            "resources": {"instance": "this machine", "cpus": os.cpu_count(), "gpus": contract.detect_gpus()},
            "outputs": str(store_home / "<run-id>"),
            "cost": {"price_per_hour": 0.0, "max_cost_on_demand": 0.0},
        }

    def reserve(self, store: Store, run_id: str) -> dict:
        """Claim ``runs/<run_id>/`` for a new run before it is recorded; return the backend state
        its row starts with (who is launching it). The folder is created here, atomically, so a
        new run never uses a folder it did not create (one left by a run whose database was moved
        aside keeps its code and checkpoints)."""
        base = run_dir(store, run_id)
        base.parent.mkdir(parents=True, exist_ok=True)
        try:
            base.mkdir()
        except FileExistsError:
            raise UsageError(
                f"The run folder {base} already exists, but the run database has no run {run_id!r}.",
                "Pick another --name; that folder holds an earlier run (was dl.db moved aside?).",
            ) from None
        return _launcher()

    def submit(self, store: Store, run: Run, spec: LaunchSpec) -> None:
        """Prepare the run's folder (claimed by ``reserve``) and start its supervisor. Once the
        supervisor exists the run is its: ``handed_over`` is recorded with its pid, and an
        interrupt (Ctrl-C) that arrives meanwhile is raised only after that."""
        base = run_dir(store, run.id)
        prepare(base, run.id, spec)
        store.merge_backend_state(
            run.id, run_dir=str(base), package_uri=spec.package.path.as_uri(), program=spec.job.entry_point
        )
        store.update(
            run.id,
            log_uri=str(log_file(base)),
            checkpoint_uri=str(base / "checkpoints"),
            model_uri=str(base / "model"),
            output_uri=str(base / "output"),
        )
        self._start_supervisor(store, run, base)

    def resume(self, store: Store, run: Run) -> None:
        """Start a Failed or Stopped run again in its own folder; the runtime continues from last.ckpt.

        Refuses (UsageError, nothing changed) a run that never got a folder, or whose folder a
        trainer still holds. Otherwise its processes are forgotten, it goes back to Pending
        (``store.mark_resumed``) and a new supervisor starts."""
        if not run.backend_state.get("run_dir"):
            raise UsageError(
                f"Run {run.id} never started ({run.failure_reason or 'no run folder'}); there is nothing to resume.",
                f"Launch it again: dl launch {run.job_dir or run.job}",
            )
        base = Path(run.backend_state["run_dir"])
        if process.lock_held(supervisor.trainer_lock(base)):
            raise UsageError(
                f"A trainer of run {run.id} is still running in {base}; a second one would share its folder.",
                f"Stop it first: dl stop {run.id}",
            )
        attempts = int(run.backend_state.get("attempts", 1)) + 1
        # Forget the old processes first, so nobody takes the restarted run for a dead one.
        forget = {**dict.fromkeys(_PROCESS_KEYS), **_launcher()}
        store.merge_backend_state(run.id, attempts=attempts, stop_requested=False, handed_over=False, **forget)
        store.mark_resumed(run.id)
        for stale in (base / "output" / contract.FAILURE_FILE, base / "output" / contract.SUCCESS_FILE):
            stale.unlink(missing_ok=True)
        self._start_supervisor(store, store.get(run.id), base)

    def _start_supervisor(self, store: Store, run: Run, base: Path) -> None:
        from orchestrator.faults import fault

        with open(log_file(base), "ab") as log, _interrupts_deferred():
            child = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.backends.local.supervisor", str(store.home), run.id],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=base,
            )
            fault("supervisor-started")
            store.merge_backend_state(
                run.id, pid=child.pid, pid_created=process.start_time(child.pid), pgid=child.pid, handed_over=True
            )

    def _alive(self, run: Run) -> bool:
        """Whether any process of the run may still record its outcome: one holds the trainer
        lock, or the supervisor or trainer runs, or (before a supervisor exists) its launcher."""
        state = run.backend_state
        if state.get("run_dir") and process.lock_held(supervisor.trainer_lock(Path(state["run_dir"]))):
            return True
        if process.alive(state.get("pid"), state.get("pid_created")):
            return True
        if process.alive(state.get("trainer_pid"), state.get("trainer_created")):
            return True
        if state.get("pid") is not None:
            return False
        if state.get("launcher_pid") is None:
            return True  # inserted without a launcher (by an older dl, or by hand): nothing to judge it by
        return process.alive(state["launcher_pid"], state.get("launcher_created"))

    def refresh(self, store: Store, run: Run) -> Run:
        """The run as its processes and folder say: unchanged while any of them lives; once none
        is left, settled from the folder (Completed if training finished, Stopped if a stop was
        asked for, else Failed naming what was gone)."""
        if run.status.is_terminal or self._alive(run):
            return run
        current = store.get(run.id)  # the supervisor may have recorded it since
        if current.status.is_terminal:
            return current
        base = Path(current.backend_state["run_dir"]) if current.backend_state.get("run_dir") else None
        return supervisor.settle(store, run.id, base)

    def log_path(self, run: Run) -> Path | None:
        return Path(run.log_uri) if run.log_uri else None

    def read_log(self, run: Run) -> Iterator[str]:
        return self._stream(run, None)

    def follow(self, run: Run, store: Store, poll: float = 0.2) -> Iterator[str]:
        return self._stream(run, store, poll)

    def _stream(self, run: Run, store: Store | None, poll: float = 0.2) -> Iterator[str]:
        """The log from the start; with a store, on until the run ends and its last bytes are read."""
        path = self.log_path(run)
        position = 0
        while True:
            if path and path.exists():
                with open(path, encoding="utf-8", errors="replace") as handle:
                    handle.seek(position)
                    chunk = handle.read()
                    position = handle.tell()
                if chunk:
                    yield chunk
            if store is None:
                return
            current = self.refresh(store, store.get(run.id))
            if current.status.is_terminal:
                if path and path.exists() and path.stat().st_size > position:
                    continue
                return
            time.sleep(poll)

    def scheduler(self):
        from orchestrator.backends.local.schedules import TickScheduler

        return TickScheduler()

    def smoke_test(self, spec: LaunchSpec, workdir: Path) -> SmokeResult:
        return smoke.smoke_test(spec, workdir)

    def stop(self, store: Store, run: Run, grace: float) -> Run:
        """SIGTERM the run (the trainer saves last.ckpt), SIGKILL its process group after ``grace``
        seconds, and return it settled: Stopped, or Completed when its training had finished.
        Reaches the trainer even when its supervisor is gone. A finished run is returned as is."""
        run = self.refresh(store, run)
        if run.status.is_terminal:
            return run
        store.merge_backend_state(run.id, stop_requested=True)
        store.mark_stopping(run.id)
        state = run.backend_state
        base = Path(state["run_dir"]) if state.get("run_dir") else None
        sup = (state.get("pid"), state.get("pid_created"))
        trainer = (state.get("trainer_pid"), state.get("trainer_created"))
        if process.alive(*sup):
            os.kill(sup[0], signal.SIGTERM)  # the supervisor passes it on to the trainer
        elif process.alive(*trainer):
            os.kill(trainer[0], signal.SIGTERM)
        elif state.get("pgid") and base is not None and process.lock_held(supervisor.trainer_lock(base)):
            process.kill_group(state["pgid"], signal.SIGTERM)  # the group lives on: its id is not reused
        deadline = time.monotonic() + grace
        while self._alive(store.get(run.id)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._alive(store.get(run.id)) and state.get("pgid"):
            process.kill_group(state["pgid"])
            deadline = time.monotonic() + 5.0
            while self._alive(store.get(run.id)) and time.monotonic() < deadline:
                time.sleep(0.05)
        return self.refresh(store, store.get(run.id))

    def checkpoint_manifest(self, run: Run) -> list[dict]:
        import json

        path = Path(run.checkpoint_uri or "") / "manifest.json"
        try:
            return list(json.loads(path.read_text()).values())
        except (OSError, ValueError, AttributeError):
            return []

    def artifacts(self, run: Run) -> list[Artifact]:
        found: list[Artifact] = []
        # A script run's checkpoints may be in its own format and named as it likes (state.pt).
        checkpoints = "*" if "dl_script_args" in run.params else "*.ckpt"
        for kind, folder, pattern in (
            ("model", run.model_uri, "*"),
            ("checkpoint", run.checkpoint_uri, checkpoints),
            ("metrics", run.output_uri and str(Path(run.output_uri) / "data"), "*"),
        ):
            if not folder or not Path(folder).is_dir():
                continue
            for path in sorted(Path(folder).glob(pattern)):
                if path.is_file() and not path.name.startswith(".") and path.name != "manifest.json":
                    found.append(Artifact(path.name, kind, str(path), path.stat().st_size))
        return found

    def download(self, run: Run, items: list, root: Path, progress: bool | None = None):
        """Copy artifacts out of the run folder: verified, renamed into place, unchanged ones skipped."""
        from orchestrator.pulls import Report, load_manifest, save_manifest, write_error

        manifest = load_manifest(root)
        report = Report()
        for item in items:
            source = Path(item.artifact.location)
            if not source.is_file():
                raise ArtifactError(f"{item.artifact.name} of run {run.id} is gone from {source}.")
            stat = source.stat()
            key = str(item.dest.relative_to(root))
            stamp = {"source": str(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            entry = manifest.get(key, {})
            if item.dest.is_file() and {k: entry.get(k) for k in stamp} == stamp:
                report.skipped.append(item.dest)
                continue
            with replacing(item.dest, tmp=item.dest.with_name(f".{item.dest.name}.dlpart"), fsync=False) as part:
                try:
                    shutil.copyfile(source, part)
                except OSError as exc:
                    raise write_error(part, exc) from None
                if item.verify is not None:
                    item.verify(part, False)  # a plain copy: nothing checked it against the source
            manifest[key] = stamp
            save_manifest(root, manifest)
            report.fetched.append(item.dest)
            report.bytes += stat.st_size
        return report
