"""The interface every backend implements, and one protocol per optional feature.

A backend is a class with the core methods of :class:`Backend`. What else it can do is not
a flag it sets but the feature protocols it implements (dstack's ``ComputeWith...Support``):
:func:`capabilities` derives the set by ``isinstance`` against each protocol in
:data:`FEATURES`, so a capability cannot be claimed without its methods, and
:func:`require` is how callers check one before they use it (a one-line BackendError when
the target lacks it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from orchestrator.options import LaunchOptions

if TYPE_CHECKING:
    import typer

    from orchestrator.api import Plan
    from orchestrator.config import Settings
    from orchestrator.doctor import Check
    from orchestrator.jobs import Job
    from orchestrator.packaging import Package
    from orchestrator.store import Run, Schedule, Store


class Capability(StrEnum):
    STOP = "stop"
    FOLLOW_LOGS = "follow_logs"
    PULL = "pull"
    SMOKE_TEST = "smoke_test"
    RESUME = "resume"
    REFRESH_MANY = "refresh_many"
    READY = "ready"
    RESERVE = "reserve"
    SCHEDULES = "schedules"
    DOCTOR = "doctor"
    COMMANDS = "commands"
    IMPORT = "import"


@dataclass
class LaunchSpec:
    """Everything a backend needs to start a run, already validated. ``data``: the channels the
    run sees; ``options``: the launch options, holding only fields the backend accepts (and the
    target and channels), warm start already turned into the ``init`` channel."""

    job: Job
    package: Package
    params: dict[str, object]
    data: dict[str, str] = field(default_factory=dict)
    options: LaunchOptions = field(default_factory=LaunchOptions)


@dataclass
class Artifact:
    """A file a run produced: ``kind`` is model, checkpoint or metrics; ``location`` a path or URI."""

    name: str
    kind: str
    location: str
    size: int | None = None
    etag: str | None = None


@dataclass
class SmokeResult:
    """The dry run's smoke test: passed or not, how long it took, the program's one-line error, its log."""

    ok: bool
    seconds: float
    error: str | None
    log: str


@runtime_checkable
class Backend(Protocol):
    """What every backend does. ``public_state_keys``: the keys of ``run.backend_state`` that
    users and scripts may read (`dl show`, ``--json`` under "backend")."""

    name: str
    public_state_keys: tuple[str, ...]
    # The LaunchOptions fields of its own it takes (besides options.COMMON); others are refused
    # with a UsageError naming the flag before anything is packaged or recorded.
    accepted_options: frozenset[str]

    def check(self, spec: LaunchSpec) -> None:
        """Raise a DlError when this backend cannot run ``spec`` (missing dependency, data, bad option).
        Sends nothing and records nothing."""

    def describe(self, spec: LaunchSpec, run_id: str, git_commit: str | None) -> dict:
        """What a launch would do (resources, cost, the request it would send); starts and sends nothing."""

    def submit(self, store: Store, run: Run, spec: LaunchSpec) -> None:
        """Start ``run`` (already inserted, Pending) and return at once; record where its log and
        outputs will be (log_uri, checkpoint_uri, model_uri, output_uri). Raising leaves the
        run for the caller to mark Failed."""

    def refresh(self, store: Store, run: Run) -> Run:
        """Bring a non-terminal run's status up to date with reality; return it re-read.
        A run in a terminal state is returned unchanged."""

    def log_path(self, run: Run) -> Path | None:
        """Where the run's log can be read, if it is a local file; None when it lives elsewhere."""

    def read_log(self, run: Run) -> Iterator[str]:
        """Yield the run's log as far as it is written now, then return."""

    def checkpoint_manifest(self, run: Run) -> list[dict]:
        """Entries of the runtime's checkpoint manifest.json, as far as it can be read now ([] if none)."""

    def artifacts(self, run: Run) -> list[Artifact]:
        """The run's model, checkpoints and metrics files, as they are now ([] before any)."""


@runtime_checkable
class SupportsStop(Protocol):
    def stop(self, store: Store, run: Run, grace: float) -> Run:
        """Ask the run to stop, saving a checkpoint; force it after ``grace`` seconds where the
        backend decides that. stop() on a run in a terminal state returns it unchanged."""


@runtime_checkable
class SupportsFollowLogs(Protocol):
    def follow(self, run: Run, store: Store) -> Iterator[str]:
        """Yield log lines as they are written, refreshing the run through ``store``, until it ends
        and everything it wrote has been yielded."""


@runtime_checkable
class SupportsPull(Protocol):
    def download(self, run: Run, items: list, root: Path, progress: bool | None = None):
        """Bring ``items`` (api.PullItem: artifact, dest under ``root``, verify) here; return a
        pulls.Report. Never leaves a partial file at a destination; skips unchanged files."""


@runtime_checkable
class SupportsSmokeTest(Protocol):
    def smoke_test(self, spec: LaunchSpec, workdir: Path) -> SmokeResult:
        """Run ``spec``'s package once on this machine through the container contract with
        fast_dev_run, in ``workdir``; record nothing."""


@runtime_checkable
class SupportsResume(Protocol):
    def resume(self, store: Store, run: Run) -> None:
        """Start a Failed or Stopped run again with its own package, parameters and checkpoint
        folder; return at once. First a DlError when it cannot resume (nothing changed); then
        the backend resets what it keeps about the run's processes, marks it resumed
        (``store.mark_resumed``) and starts it."""


@runtime_checkable
class SupportsRefreshMany(Protocol):
    def refresh_many(self, store: Store, runs: list[Run]) -> list[Run]:
        """``refresh`` for many runs at once (fewer calls than one per run); same order as ``runs``."""


@runtime_checkable
class SupportsReady(Protocol):
    def ready(self, spec: LaunchSpec) -> None:
        """Raise a DlError when a real launch cannot go ahead (settings, credentials), before
        anything is recorded. Unlike ``check`` it may look at the environment, but sends nothing."""


@runtime_checkable
class SupportsReserve(Protocol):
    def reserve(self, store: Store, run_id: str) -> dict:
        """Claim ``run_id`` where the backend keeps runs (the local run folder) before the run is
        recorded; a DlError when it is taken there. Returns the backend state the run's row
        starts with."""


@runtime_checkable
class Scheduler(Protocol):
    """One target's side of scheduled retraining; orchestrator/scheduling.py holds what all share
    (the pinned package, the store's schedules and firings, promotion).

    ``fires_here``: True when dl's own tick scheduler (`dl schedule run`) starts the runs on
    this machine; False when the target's cloud fires them and ``discover`` imports them."""

    fires_here: bool

    def check(self, retries: int | None, window_minutes: int | None) -> None:
        """UsageError when this target's schedules cannot take these firing options."""

    def pointer(self, name: str, options: LaunchOptions) -> str:
        """The data channel through which a run of this target reads schedule ``name``'s promoted
        checkpoint (``--from SCHEDULE:best``); it exists (perhaps empty) once this returns."""

    def create(self, schedule: Schedule, plan: Plan) -> dict:
        """Create the schedule outside the store where the target needs it; return what the store
        keeps about it (``schedule.cloud``). Nothing is created when this raises."""

    def set_state(self, schedule: Schedule, *, enabled: bool) -> None:
        """Pause or resume it outside the store."""

    def replace_target(self, schedule: Schedule, plan: Plan) -> None:
        """Make its firings launch ``plan`` (a new pinned package) from now on."""

    def delete(self, schedule: Schedule) -> None:
        """Delete it outside the store; one already gone is fine."""

    def copy_to_pointer(self, schedule: Schedule, run: Run, location: str) -> str:
        """Copy checkpoint ``location`` of ``run`` to the schedule's pointer (never a partial file
        there); return where it now is."""

    def discover(self, store: Store, schedules: list[Schedule]) -> list[Run]:
        """Insert the runs the target started for ``schedules`` (or, given none, for schedules made
        elsewhere) that the store does not know yet; return them."""


@runtime_checkable
class SupportsSchedules(Protocol):
    def scheduler(self) -> Scheduler:
        """This target's :class:`Scheduler`."""


@runtime_checkable
class SupportsDoctor(Protocol):
    def doctor_checks(self, settings: Settings | None, options: dict[str, object]) -> list[Check]:
        """This target's lines of `dl doctor`, in order (``settings`` None: they could not be read,
        so each check is skipped; ``options``: the command's, e.g. gpu). Costs and changes nothing."""


@runtime_checkable
class SupportsCommands(Protocol):
    def register_commands(self, app: typer.Typer) -> None:
        """Add this backend's own commands to ``app`` (dl's command line). Runs on every `dl`,
        `dl --help` included: it imports no SDK, only the commands' modules."""


@runtime_checkable
class SupportsImport(Protocol):
    def import_runs(self, store: Store) -> list[Run]:
        """Insert every run dl started on this target that the store does not know yet (found on the
        target's side, by dl's tags), and return them: `dl runs --sync --all`, `dl store rebuild`.
        A DlError when the target is not set up here to be asked."""


FEATURES: dict[Capability, type] = {
    Capability.STOP: SupportsStop,
    Capability.FOLLOW_LOGS: SupportsFollowLogs,
    Capability.PULL: SupportsPull,
    Capability.SMOKE_TEST: SupportsSmokeTest,
    Capability.RESUME: SupportsResume,
    Capability.REFRESH_MANY: SupportsRefreshMany,
    Capability.READY: SupportsReady,
    Capability.RESERVE: SupportsReserve,
    Capability.SCHEDULES: SupportsSchedules,
    Capability.DOCTOR: SupportsDoctor,
    Capability.COMMANDS: SupportsCommands,
    Capability.IMPORT: SupportsImport,
}

_CANNOT = {
    Capability.STOP: "stop runs",
    Capability.FOLLOW_LOGS: "follow logs",
    Capability.PULL: "download artifacts",
    Capability.SMOKE_TEST: "smoke-test on this machine",
    Capability.RESUME: "resume runs",
    Capability.REFRESH_MANY: "refresh many runs at once",
    Capability.READY: "check readiness",
    Capability.RESERVE: "reserve run ids",
    Capability.SCHEDULES: "run schedules",
    Capability.DOCTOR: "check itself",
    Capability.COMMANDS: "add commands",
    Capability.IMPORT: "import runs",
}


def capabilities(backend: object) -> frozenset[Capability]:
    """The features ``backend`` implements: derived from its methods, never declared apart from them."""
    return frozenset(cap for cap, feature in FEATURES.items() if isinstance(backend, feature))


def supports(backend: object, capability: Capability) -> bool:
    return isinstance(backend, FEATURES[capability])


def require(backend: Backend, capability: Capability, hint: str = ""):
    """``backend`` itself when it has ``capability``; else a one-line BackendError naming the target."""
    if not supports(backend, capability):
        from orchestrator.errors import BackendError

        raise BackendError(f"The {backend.name} target cannot {_CANNOT[capability]}.", hint)
    return backend
