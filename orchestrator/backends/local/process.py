"""Process bookkeeping for detached runs: identity that survives PID reuse, the trainer lock,
waiting, killing. Through psutil, so that it means the same on Linux and macOS.

A process is named by (pid, created): its pid and its creation time (seconds since the epoch,
as psutil reports it). A pid whose creation time differs is another process that reused it.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

# Two readings of one process's creation time agree to the clock tick; a reused pid is far off.
_SAME_PROCESS = 0.05


def start_time(pid: int) -> float | None:
    """The creation time of process ``pid``; None when there is no such process (or it is hidden)."""
    import psutil  # here, not at the top: `dl --help` imports this backend for its commands hook

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def alive(pid: int | None, started: float | None) -> bool:
    """True while ``pid`` runs (not a zombie) and, when ``started`` is given, is that same process."""
    if pid is None:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: it exists, its identity cannot be checked
        return True
    return not isinstance(started, float) or abs(created - started) < _SAME_PROCESS


def wait_exit(pid: int, started: float | None, timeout: float, poll: float = 0.05) -> bool:
    """Wait until the process is gone; True when it went within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while alive(pid, started):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` (SIGKILL by default) to process group ``pgid`` (a run's supervisor and trainer)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- the trainer lock -------------------------------------------------------------------


def hold_lock(path: Path, attempts: int = 40, poll: float = 0.05) -> int | None:
    """Take the exclusive lock on ``path`` (created if missing); the open descriptor, or None
    when another process holds it. Retries for ``attempts * poll`` seconds, since a reader's
    probe (``lock_held``) holds it for an instant. The lock lasts while any process holds the
    descriptor: pass it to a child (``pass_fds``) and the child holds it after the parent dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(attempts):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if attempt + 1 < attempts:
                time.sleep(poll)
    os.close(fd)
    return None


def lock_held(path: Path) -> bool:
    """True while some process holds the exclusive lock on ``path``; opens it read-only and
    writes nothing, so it works on a read-only DL_HOME. A missing file is not held."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock this probe may have taken
    return False
