"""Process bookkeeping for detached runs: identity that survives PID reuse, waiting, killing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (Linux), to tell a PID from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so split after its closing ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _is_zombie(pid):
        return False
    current = start_time(pid)
    return started is None or current is None or current == started


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_exit(pid: int, started: int | None, timeout: float, poll: float = 0.05) -> bool:
    """Wait until the process is gone; True when it went within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while alive(pid, started):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def kill_group(pid: int) -> None:
    """SIGKILL the process group that ``pid`` leads (the supervisor and the training program)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
