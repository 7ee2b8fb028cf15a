"""Launching runs: planning (validate and package), starting, resuming, describing, smoke-testing."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import settings
from orchestrator.api.pull import PullItem, select_artifacts, verify_checkpoint
from orchestrator.api.query import refresh
from orchestrator.backends import REGISTRY, Capability, LaunchSpec, require, supports
from orchestrator.backends.base import SmokeResult
from orchestrator.backends.runtime_io import INIT_CHANNEL
from orchestrator.client import Client, using
from orchestrator.errors import ArtifactError, UsageError
from orchestrator.failures import of_error
from orchestrator.jobs import Job, find_job
from orchestrator.options import LaunchOptions, check_accepted
from orchestrator.paths import resolve_channels
from orchestrator.runids import insert_new, new_run_id, valid_run_name
from orchestrator.store import Run, RunStatus

if TYPE_CHECKING:
    from orchestrator.packaging import Package


def default_target(*, client: Client | None = None) -> str:
    """The project's default target: --target > DL_TARGET > dl.toml [defaults] target > local."""
    with using(client) as dl:
        return dl.settings().target


def git_info(path: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git repository holding ``path``; (None, None) outside one."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip())


@dataclass
class Plan:
    """What a launch would do, before anything runs. ``options`` are resolved: the target chosen,
    the channels absolute (a warm start among them as ``init``)."""

    job: Job
    params: dict[str, object]
    package: Package
    options: LaunchOptions

    @property
    def target(self) -> str:
        return self.options.target

    @property
    def data(self) -> dict[str, str]:
        return dict(self.options.data)

    @property
    def spec(self) -> LaunchSpec:
        return LaunchSpec(self.job, self.package, self.params, self.data, self.options)


def plan(
    job_name: str,
    *,
    overrides: dict[str, str] | None = None,
    options: LaunchOptions | None = None,
    script_args: list[str] | None = None,
    root: str | None = None,
    client: Client | None = None,
    **choices,
) -> Plan:
    """Validate everything and build the package; starts nothing.

    ``job_name``: a trainjob, or a Python script (orchestrator/scripts.py) whose ``script_args``
    (what follows ``--``) reach it verbatim and whose project is ``root`` when given.
    ``options``: where and how it runs; ``choices``: LaunchOptions fields on top of them
    (``plan("mnist", target="local")``). A field the target does not take is a UsageError
    naming its flag, before anything is built."""
    from orchestrator.packaging import build_package

    with using(client) as dl:
        options = LaunchOptions.of(options, **choices)
        target = options.target or dl.settings().target
        job = find_job(job_name, root=root)
        if job.kind == "script":
            params = job.resolve(overrides, script_args)
        elif script_args:
            raise UsageError(
                f"Arguments after the job ({' '.join(script_args)}) are for scripts; {job.name} is a trainjob.",
                "Give its parameters with --set KEY=VALUE.",
            )
        else:
            params = job.resolve(overrides)
        backend = dl.backend(target)
        check_accepted(options, target, backend)
        data = resolve_channels(options.data)
        allow = list(options.allow_secrets) or None  # files that look like secrets, packaged on purpose
        package = build_package(job, dl.home / "packages", settings.max_package_mb(), allow=allow)
        if options.from_run:
            if INIT_CHANNEL in data:
                raise UsageError(f"--from uses the data channel {INIT_CHANNEL!r}; --data {INIT_CHANNEL}=... clashes.")
            data[INIT_CHANNEL] = warm_start_source(options.from_run, target, client=dl)
        if options.from_optimizer:
            if INIT_CHANNEL not in data:
                raise UsageError("--from-optimizer needs --from RUN.")
            if job.kind == "script":
                raise UsageError("--from-optimizer is for trainjobs; a script restores its own optimizer.")
            params["init_optimizer"] = True
        resolved = options.with_(target=target, data=data, from_run=None, from_optimizer=False)
        the_plan = Plan(job, params, package, resolved)
        backend.check(the_plan.spec)
        return the_plan


def resume(run_id: str, *, client: Client | None = None) -> tuple[Run, bool]:
    """Continue a Failed or Stopped run from its last checkpoint, with its own package, parameters
    and checkpoint folder. Returns (run, started); a Completed run is returned untouched."""
    with using(client) as dl:
        store = dl.store
        run = refresh(dl, store.get(run_id))
        backend = dl.backend(run.target)
        if not supports(backend, Capability.RESUME):
            raise UsageError(
                f"Run {run.id} ran on {run.target}, which does not resume runs (SageMaker resumes spot interruptions"
                " by itself).",
                f"To continue it as a new run: dl launch {run.job} --target {run.target} --from {run.id}:last",
            )
        if run.status is RunStatus.COMPLETED:
            return run, False
        if not run.status.is_terminal:
            raise UsageError(f"Run {run.id} is still {run.status.value}.", f"Stop it first: dl stop {run.id}")
        backend.resume(store, run)  # checks the run can resume, then restarts it (see LocalBackend.resume)
        return store.get(run.id), True


def warm_start_source(ref: str, target: str, *, client: Client | None = None) -> str:
    """``RUN[:best|:last]`` → where the new run finds that checkpoint: a local folder for the local
    target (fetched from S3 first if the run was in the cloud), an S3 URI or a local file for sagemaker."""
    with using(client) as dl:
        run_id, _, which = ref.partition(":")
        which = which or "best"
        if which not in ("best", "last"):
            raise UsageError(f"--from {ref!r}: after ':' comes best or last.", "Example: --from RUN:last")
        store = dl.store
        source = store.get(run_id)
        backend = dl.backend(source.target)
        found = [a for a in select_artifacts(backend.artifacts(source), which) if a.kind == "checkpoint"]
        if not found:
            raise ArtifactError(f"Run {source.id} has no {which} checkpoint to start from.", "Check `dl show`.")
        artifact = found[0]
        if target != "local" and artifact.location.startswith("s3://"):
            return artifact.location
        if target != "local":
            return artifact.location  # a local file: the cloud backend uploads it under its hash
        folder = dl.home / "cache" / "init" / f"{source.id}-{artifact.name.removesuffix('.ckpt')}"
        label = f"{artifact.name} of run {source.id}"
        item = PullItem(artifact, folder / artifact.name, functools.partial(verify_checkpoint, name=label))
        require(backend, Capability.PULL).download(source, [item], folder, progress=False)
        return str(folder)


def describe(the_plan: Plan, *, client: Client | None = None) -> dict:
    """Resources, cost estimate and (for cloud targets) the exact request; sends nothing."""
    with using(client) as dl:
        commit, _ = git_info(the_plan.job.path)
        return dl.backend(the_plan.target).describe(the_plan.spec, new_run_id(the_plan.job.name), commit)


def launch(
    job_name: str,
    *,
    overrides: dict[str, str] | None = None,
    options: LaunchOptions | None = None,
    name: str | None = None,
    client: Client | None = None,
    **choices,
) -> Run:
    """Validate, package and start a run; return it at once (Pending or InProgress).
    ``choices``: LaunchOptions fields (``launch("mnist", target="local", data={"train": "./d"})``)."""
    with using(client) as dl:
        return start(plan(job_name, overrides=overrides, options=options, client=dl, **choices), name=name, client=dl)


def start(
    the_plan: Plan,
    *,
    name: str | None = None,
    schedule: str | None = None,
    sweep: str | None = None,
    client: Client | None = None,
) -> Run:
    """Start the run that ``the_plan`` describes (``schedule``: the schedule firing it;
    ``sweep``: the sweep it belongs to)."""
    from orchestrator.faults import fault

    with using(client) as dl:
        store = dl.store
        run_id = valid_run_name(name) if name else ""  # a generated id is drawn as the run is inserted
        if name and store.exists(run_id):
            raise UsageError(f"A run named {run_id!r} already exists.", "Pick another --name.")
        backend = dl.backend(the_plan.target)
        if supports(backend, Capability.READY):
            backend.ready(the_plan.spec)  # settings and credentials, before anything is recorded

        def claim(run_id: str) -> dict:
            """The backend claims the id (the local run folder) and says what the row starts with."""
            return backend.reserve(store, run_id) if supports(backend, Capability.RESERVE) else {}

        commit, dirty = git_info(the_plan.job.path)
        run = Run(
            id=run_id,
            job=the_plan.job.name,
            target=the_plan.target,
            status=RunStatus.PENDING,
            params=the_plan.params,
            package_hash=the_plan.package.sha256,
            git_commit=commit,
            git_dirty=dirty,
            created_at=time.time(),
            data=the_plan.data,
            job_dir=str(the_plan.job.path),
            schedule=schedule,
            sweep=sweep,
        )
        if name:
            run.backend_state = claim(run_id)
            store.insert(run)
        else:
            run = insert_new(store, run, the_plan.job.name, claim)
        fault("after-insert")
        try:
            backend.submit(store, run, the_plan.spec)
        except BaseException as exc:
            # Once the backend has handed the run to its own process, that process records the
            # outcome: an interrupt here (Ctrl-C) must not call a running run Failed.
            if not store.get(run.id).backend_state.get("handed_over"):
                why = "the launch was interrupted." if isinstance(exc, KeyboardInterrupt) else str(exc)
                kind = of_error(exc)
                store.mark_finished(
                    run.id, RunStatus.FAILED, failure_reason=f"Could not start: {why}", failure_kind=kind
                )
            raise
        return store.get(run.id)


def smoke_test(the_plan: Plan, workdir: Path, *, client: Client | None = None) -> SmokeResult:
    """Run the packaged code once on this machine through the container contract with fast_dev_run.

    Every target runs the same package under the same contract, so a target that cannot
    smoke-test here itself (a cloud one) is tested by the first registered backend that can."""
    with using(client) as dl:
        backend = dl.backend(the_plan.target)
        if not supports(backend, Capability.SMOKE_TEST):
            found = (b for b in map(dl.backend, REGISTRY) if supports(b, Capability.SMOKE_TEST))
            backend = next(found, backend)
        return require(backend, Capability.SMOKE_TEST).smoke_test(the_plan.spec, workdir)
