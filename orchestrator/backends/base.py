"""The interface every backend implements, and the capabilities it may declare."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from orchestrator.jobs import Job
    from orchestrator.packaging import Package
    from orchestrator.store import Run, Store


class Capability(StrEnum):
    STOP = "stop"
    FOLLOW_LOGS = "follow_logs"
    PULL = "pull"
    SMOKE_TEST = "smoke_test"
    RESUME = "resume"


@dataclass
class LaunchSpec:
    """Everything a backend needs to start a run, already validated."""

    job: Job
    package: Package
    params: dict[str, object]
    data: dict[str, str] = field(default_factory=dict)
    # Backend-specific choices from flags (gpu, instance_type, nodes, spot, max_hours, ...).
    options: dict[str, object] = field(default_factory=dict)


@dataclass
class Artifact:
    """A file a run produced: ``kind`` is model, checkpoint or metrics; ``location`` a path or URI."""

    name: str
    kind: str
    location: str
    size: int | None = None
    etag: str | None = None


class Backend(Protocol):
    name: str
    capabilities: frozenset[Capability]

    def check(self, spec: LaunchSpec) -> None:
        """Raise a DlError when this backend cannot run ``spec`` (missing dependency, data, credentials)."""

    def describe(self, spec: LaunchSpec, run_id: str, git_commit: str | None) -> dict:
        """What a launch would do (resources, cost, the request it would send); starts and sends nothing."""

    def submit(self, store: Store, run: Run, spec: LaunchSpec) -> None:
        """Start ``run`` and return at once; record where its logs and outputs will be."""

    def refresh(self, store: Store, run: Run) -> Run:
        """Bring a non-terminal run's status up to date with reality; return it re-read."""

    def log_path(self, run: Run) -> Path | None:
        """Where the run's log can be read, if it is a local file."""

    def stop(self, store: Store, run: Run, grace: float) -> Run:
        """Ask the run to stop, saving a checkpoint; force it after ``grace`` seconds.
        stop() on a run in a terminal state returns it unchanged."""

    def checkpoint_manifest(self, run: Run) -> list[dict]:
        """Entries of the runtime's checkpoint manifest.json, as far as it can be read now."""

    def artifacts(self, run: Run) -> list[Artifact]:
        """The run's model, checkpoints and metrics files, as they are now."""

    def download(self, run: Run, items: list, root: Path, progress: bool | None = None):
        """Bring ``items`` (api.PullItem: artifact, dest under ``root``, verify) here; return a
        transfer.Report. Never leaves a partial file at a destination; skips unchanged files."""

    def follow(self, run: Run) -> Iterator[str]:
        """Yield log lines as they are written until the run ends."""
