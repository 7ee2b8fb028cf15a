"""The local backend: a run is a folder laid out like SageMaker's /opt/ml and a supervisor process.

``submit`` lays out ``DL_HOME/runs/<id>/`` (see contract.py), extracts the package into
``code/`` and starts a detached supervisor (supervisor.py) that runs the program, streams
its output to ``dl/log.txt`` and records the outcome in the store. The run survives the
terminal that launched it. ``stop`` sends SIGTERM (the runtime saves ``last.ckpt`` and
exits) and SIGKILLs the process group after the grace period.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from orchestrator.backends.base import Artifact, LaunchSpec, SmokeResult
from orchestrator.backends.local import contract, process
from orchestrator.errors import ArtifactError, BackendError, UsageError
from orchestrator.store import Run, RunStatus, Store

_CHANNEL_NAME_OK = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."


def run_dir_root() -> Path:
    from orchestrator.settings import dl_home

    return dl_home() / "runs"


def run_dir(store: Store, run_id: str) -> Path:
    return store.home / "runs" / run_id


def log_file(base: Path) -> Path:
    return base / "dl" / "log.txt"


def container_spec(run_id: str, params: dict, data: dict[str, str], package_uri: str) -> contract.ContainerSpec:
    from orchestrator.packaging import ENTRY_POINT

    return contract.ContainerSpec(
        job_name=run_id,
        program=ENTRY_POINT,
        submit_dir=package_uri,
        hyperparameters=dict(params),
        channels={name: Path(path) for name, path in data.items()},
    )


def prepare(base: Path, run_id: str, spec: LaunchSpec) -> contract.ContainerSpec:
    """Lay out the container folder and extract the package into code/."""
    from orchestrator.packaging import extract_package

    cspec = container_spec(run_id, spec.params, spec.data, spec.package.path.as_uri())
    contract.layout(base, cspec)
    if not any((base / "code").iterdir()):
        extract_package(spec.package.path, base / "code")
    (base / "dl").mkdir(exist_ok=True)
    return cspec


def child_env(base: Path, cspec: contract.ContainerSpec) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(contract.training_env(base, cspec))
    env["PYTHONUNBUFFERED"] = "1"
    env["DL_CHECKPOINT_DIR"] = str(base / "checkpoints")
    return env


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


class LocalBackend:
    """Features: stop, follow logs, pull, smoke test, resume, schedules (base.py)."""

    name = "local"
    public_state_keys: tuple[str, ...] = ()

    accepted_options: frozenset[str] = frozenset()  # this machine: no choice of machine, image or limits

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

    def submit(self, store: Store, run: Run, spec: LaunchSpec) -> None:
        base = run_dir(store, run.id)
        prepare(base, run.id, spec)
        store.merge_backend_state(run.id, run_dir=str(base), package_uri=spec.package.path.as_uri())
        store.update(
            run.id,
            log_uri=str(log_file(base)),
            checkpoint_uri=str(base / "checkpoints"),
            model_uri=str(base / "model"),
            output_uri=str(base / "output"),
        )
        self._start_supervisor(store, run, base)

    def resume(self, store: Store, run: Run) -> None:
        """Start a Failed or Stopped run again in its own folder; the runtime continues from last.ckpt."""
        base = Path(run.backend_state["run_dir"])
        for stale in (base / "output" / contract.FAILURE_FILE, base / "output" / contract.SUCCESS_FILE):
            stale.unlink(missing_ok=True)
        self._start_supervisor(store, run, base)

    def _start_supervisor(self, store: Store, run: Run, base: Path) -> None:
        with open(log_file(base), "ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.backends.local.supervisor", str(store.home), run.id],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=base,
            )
        store.merge_backend_state(run.id, pid=child.pid, pid_start=process.start_time(child.pid))

    def refresh(self, store: Store, run: Run) -> Run:
        if run.status.is_terminal:
            return run
        pid = run.backend_state.get("pid")
        if pid is None:
            return run  # still being submitted
        if process.alive(pid, run.backend_state.get("pid_start")):
            return run
        status = RunStatus.STOPPED if run.backend_state.get("stop_requested") else RunStatus.FAILED
        reason = (
            None
            if status is RunStatus.STOPPED
            else ("The run's process ended without recording an outcome (killed, or the machine restarted).")
        )
        store.mark_finished(run.id, status, failure_reason=reason)
        return store.get(run.id)

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
        from orchestrator.backends.local.smoke import smoke_test

        return smoke_test(spec, workdir)

    def stop(self, store: Store, run: Run, grace: float) -> Run:
        """SIGTERM (the runtime saves last.ckpt), then SIGKILL of the process group after ``grace``
        seconds. stop() on a run in a terminal state returns it unchanged."""
        run = self.refresh(store, run)
        if run.status.is_terminal:
            return run
        store.merge_backend_state(run.id, stop_requested=True)
        store.mark_stopping(run.id)
        pid, start = run.backend_state.get("pid"), run.backend_state.get("pid_start")
        if pid is None or not process.alive(pid, start):
            store.mark_finished(run.id, RunStatus.STOPPED)
            return store.get(run.id)
        os.kill(pid, signal.SIGTERM)
        if not process.wait_exit(pid, start, grace):
            process.kill_group(pid)
            process.wait_exit(pid, start, 5.0)
        store.mark_finished(run.id, RunStatus.STOPPED)
        return store.get(run.id)

    def checkpoint_manifest(self, run: Run) -> list[dict]:
        import json

        path = Path(run.checkpoint_uri or "") / "manifest.json"
        try:
            return list(json.loads(path.read_text()).values())
        except (OSError, ValueError, AttributeError):
            return []

    def artifacts(self, run: Run) -> list[Artifact]:
        found: list[Artifact] = []
        for kind, folder, pattern in (
            ("model", run.model_uri, "*"),
            ("checkpoint", run.checkpoint_uri, "*.ckpt"),
            ("metrics", run.output_uri and str(Path(run.output_uri) / "data"), "*"),
        ):
            if not folder or not Path(folder).is_dir():
                continue
            for path in sorted(Path(folder).glob(pattern)):
                if path.is_file() and not path.name.startswith("."):
                    found.append(Artifact(path.name, kind, str(path), path.stat().st_size))
        return found

    def download(self, run: Run, items: list, root: Path, progress: bool | None = None):
        """Copy artifacts out of the run folder: verified, renamed into place, unchanged ones skipped."""
        from orchestrator.transfer import Report, load_manifest, save_manifest

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
            item.dest.parent.mkdir(parents=True, exist_ok=True)
            part = item.dest.with_name(f".{item.dest.name}.dlpart")
            shutil.copyfile(source, part)
            try:
                if item.verify is not None:
                    item.verify(part, False)  # a plain copy: nothing checked it against the source
            except ArtifactError:
                part.unlink(missing_ok=True)
                raise
            os.replace(part, item.dest)
            manifest[key] = stamp
            save_manifest(root, manifest)
            report.fetched.append(item.dest)
            report.bytes += stat.st_size
        return report
