"""What every backend's ``download`` shares: the pulled folder's manifest, the report, the progress line.

A pull writes ``.dl-pull.json`` into the folder it fills: one entry per file it finished
(what it came from, its size, and whatever lets the backend tell an unchanged source), so
that the next pull skips what has not changed. The manifest is replaced atomically.
Standard library and orchestrator.fsutil only.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import ArtifactError
from orchestrator.fsutil import atomic_write

MANIFEST = ".dl-pull.json"


def write_error(path: Path, exc: OSError) -> ArtifactError:
    """The one-line error for a write that failed under a pull (a full disk, a file-size limit)."""
    return ArtifactError(
        f"Cannot write {path} ({exc.strerror or exc}).", "Free some disk space, or pull --to elsewhere."
    )


@dataclass
class Report:
    fetched: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    bytes: int = 0
    resumed_bytes: int = 0
    backoffs: int = 0  # pauses before continuing a body that broke off bringing no new byte


class Progress:
    """Bytes, rate and ETA on one line of stderr (only on a terminal)."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._shown = 0.0
        self._lock = threading.Lock()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def add(self, amount: int) -> None:
        with self._lock:
            self.done += amount
            now = time.monotonic()
            if self.enabled and (now - self._shown > 0.1 or self.done >= self.total):
                self._shown = now
                sys.stderr.write("\r" + self.line() + " " * 4)
                sys.stderr.flush()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return f"  {_mb(self.done)} / {_mb(self.total)}  {_mb(rate)}/s  ETA {eta:.0f}s"

    def close(self) -> None:
        if self.enabled and self.total:
            sys.stderr.write("\n")


def _mb(num: float) -> str:
    return f"{num / 1024 / 1024:.1f} MB"


def load_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def save_manifest(folder: Path, manifest: dict) -> None:
    # No fsync, like the pulled files (backends/sagemaker/transfer.py says why): after a power cut
    # a file that differs from its entry is fetched again.
    atomic_write(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n", fsync=False)
