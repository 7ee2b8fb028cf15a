"""Fault injection for tests only: make a process misbehave at a named point.

``DL_TEST_FAULT=POINT:ACTION`` makes the process that reaches POINT do ACTION; no other
process and no other point is affected. Never set in normal use. ACTION is one of:

- ``kill``: SIGKILL itself (a crash, kill -9);
- ``interrupt``: SIGINT itself (Ctrl-C);
- ``pause``: create ``$DL_TEST_FAULT_DIR/POINT`` (holding its pid) and wait until the test
  removes that file: a barrier the test waits on, never a sleep.

Points: ``after-insert`` (api.start: the run's row is written, nothing submitted yet),
``supervisor-started`` (the local backend: the supervisor process exists, its pid not yet
recorded), ``after-claim`` (scheduling.tick: a fire time claimed "starting", its run not
started yet), ``package-write`` (packaging: half of a package written into the cache) and, in the
runtime (dl_entry.py, which has its own copy of this function since it imports nothing from dl),
``after-fit`` (training finished, the model not yet written).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def fault(point: str) -> None:
    """Act on DL_TEST_FAULT if it names ``point``; otherwise return at once."""
    spec = os.environ.get("DL_TEST_FAULT", "")
    name, _, action = spec.partition(":")
    if not spec or name != point:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "pause":
        barrier = Path(os.environ["DL_TEST_FAULT_DIR"]) / point
        barrier.write_text(str(os.getpid()))
        while barrier.exists():
            time.sleep(0.02)
