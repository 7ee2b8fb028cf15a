"""The local scheduler process: `dl schedule run` holds one lock per DL_HOME and calls
``scheduling.tick`` every poll; ``install_text`` gives the systemd unit and crontab line that keep
it running. Deciding what fires lives in ``orchestrator.scheduling``; this module only loops."""

from __future__ import annotations

import os
import time
from pathlib import Path

from orchestrator import scheduling
from orchestrator.client import Client
from orchestrator.errors import UsageError


class SchedulerLock:
    """An exclusive flock on DL_HOME/scheduler.lock: one `dl schedule run` per DL_HOME.

    The kernel releases it when the process dies, so a crashed scheduler never blocks the next."""

    def __init__(self, home: Path | None = None) -> None:
        from orchestrator.settings import dl_home

        self.path = (home or dl_home()) / "scheduler.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def run_forever(*, poll: float = 30.0, clock=time.time, stop=None, report=None, once: bool = False) -> None:
    """Hold the lock and tick every ``poll`` seconds until ``stop`` (a threading.Event) is set.
    ``report`` receives each Decision. With ``once``: one tick, and none if another scheduler runs;
    without, a second scheduler on the same DL_HOME is a UsageError."""
    import threading

    stop = stop or threading.Event()
    lock = SchedulerLock()
    if not lock.acquire():
        if once:
            return
        raise UsageError(
            f"Another `dl schedule run` (pid {lock.holder()}) holds {lock.path}.",
            "Only one scheduler runs per DL_HOME; stop that one first.",
        )
    try:
        while not stop.is_set():
            with Client() as dl:  # one per tick: settings and connection as they are now
                decisions = scheduling.tick(clock(), client=dl)
            for decision in decisions:
                if report:
                    report(decision)
            if once:
                return
            stop.wait(poll)
    finally:
        lock.release()


def install_text(*, poll: float = 30.0) -> dict[str, str]:
    """A systemd user unit running `dl schedule run`, and a crontab line running `--once` each minute."""
    import shlex
    import sys

    from orchestrator.settings import dl_home

    home = dl_home()
    python = shlex.quote(sys.executable)
    unit = (
        "[Unit]\nDescription=dl scheduled retraining (dl schedule run)\nAfter=network-online.target\n\n"
        f"[Service]\nEnvironment=DL_HOME={home}\nWorkingDirectory={Path.cwd()}\n"
        f"ExecStart={sys.executable} -m orchestrator schedule run --poll {poll:g}\nRestart=on-failure\n"
        "RestartSec=30\n\n[Install]\nWantedBy=default.target\n"
    )
    cron = (
        f"* * * * * cd {shlex.quote(str(Path.cwd()))} && DL_HOME={shlex.quote(str(home))} {python} -m orchestrator"
        f" schedule run --once >> {shlex.quote(str(home / 'scheduler.log'))} 2>&1"
    )
    path = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd" / "user"
    return {"unit": unit, "unit_path": str(path / "dl-scheduler.service"), "crontab": cron}
