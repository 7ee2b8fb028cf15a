"""The contract every registered backend must pass (orchestrator/backends/base.py).

Parametrized over REGISTRY: a new backend adds itself to the registry and a harness below
(how to give it an environment, and how a run it started gets to its end), and must then
pass every test here. ``local`` runs real tiny trainings on this machine; ``sagemaker`` talks
to the moto server on 127.0.0.1 over real HTTP, and the part moto does not play (running
the job, writing its outputs and logs) is played openly by tests/sagemaker_double.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator import api
from orchestrator.backends import REGISTRY, TARGETS, Capability, capabilities, get_backend, public_state_keys
from orchestrator.backends.base import FEATURES, Backend, Scheduler, require
from orchestrator.client import Client
from orchestrator.errors import BackendError, DlError
from orchestrator.options import COMMON, LaunchOptions
from orchestrator.store import RunStatus, open_store
from tests.conftest import REGION

TINY = {"max_epochs": "2", "limit_train_batches": "3", "limit_val_batches": "2"}


@dataclass
class Harness:
    """How the tests drive one target: launch options, bringing a started run to its end, and
    keeping one running until it is stopped."""

    target: str
    options: LaunchOptions
    finish: Callable[[str, Path], None]  # (run_id, workdir): the run has ended (Completed) when it returns
    running: Callable[[str], None]  # (run_id): the run is running when it returns, and keeps on until stopped
    stopped: Callable[[str], None]  # (run_id): a stop asked for has had its effect when it returns


def _running_locally(run_id: str) -> None:
    from tests.conftest import wait_for

    wait_for(lambda: open_store().get(run_id).status is RunStatus.IN_PROGRESS, what=f"{run_id} to start")


@pytest.fixture
def local_harness(dl_home):
    def finish(run_id: str, workdir: Path) -> None:
        ended = api.wait(run_id, timeout=300)
        assert ended.status is RunStatus.COMPLETED, ended.failure_reason

    return Harness("local", LaunchOptions(), finish, _running_locally, lambda run_id: None)


@pytest.fixture
def sagemaker_harness(aws, moto_endpoint, monkeypatch):
    from tests.sagemaker_double import MotoProxy, aws_json, play_training_job
    from tests.test_sagemaker import running_as

    def finish(run_id: str, workdir: Path) -> None:
        # moto records the job and marks it Completed at once; SageMaker's part is played here.
        played = play_training_job(aws, run_id, workdir / "container", endpoint_url=moto_endpoint)
        assert played.returncode == 0, played.output

    # moto cannot express a running job and has no StopTrainingJob: the proxy answers both.
    # The job runs until StopTrainingJob arrives, reads Stopping, then Stopped once stopped() says so.
    job = {"status": "InProgress"}

    def stop_answer(exchange):
        job["status"] = "Stopping"
        return aws_json({})

    with MotoProxy(moto_endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)

        def running(run_id: str) -> None:
            proxy.answer("SageMaker.StopTrainingJob", stop_answer)
            proxy.answer("SageMaker.DescribeTrainingJob", lambda ex: running_as(job["status"])(ex))
            proxy.answer("SageMaker.ListTrainingJobs", lambda ex: running_as(job["status"])(ex))

        def stopped(run_id: str) -> None:
            assert job["status"] == "Stopping", "no StopTrainingJob reached SageMaker"
            job["status"] = "Stopped"

        yield Harness("sagemaker", LaunchOptions(gpu="T4"), finish, running, stopped)


HARNESSES = {"local": "local_harness", "sagemaker": "sagemaker_harness"}


@pytest.fixture(params=sorted(REGISTRY))
def harness(request) -> Harness:
    assert request.param in HARNESSES, f"backend {request.param} is registered but has no harness here"
    return request.getfixturevalue(HARNESSES[request.param])


# -- what a backend is -------------------------------------------------------------------------


@pytest.mark.parametrize("target", sorted(REGISTRY))
def test_a_registered_backend_implements_the_core_protocol(target):
    backend = get_backend(target)
    assert isinstance(backend, Backend)
    assert backend.name == target and target in TARGETS
    assert public_state_keys(target) == tuple(backend.public_state_keys)
    assert backend.accepted_options <= set(LaunchOptions.names()) - COMMON  # only real, backend-specific fields
    for name, _ in inspect.getmembers(Backend, inspect.isfunction):
        if not name.startswith("_"):
            assert callable(getattr(backend, name)), f"{target} lacks {name}"


@pytest.mark.parametrize("target", sorted(REGISTRY))
def test_capabilities_are_exactly_the_features_whose_methods_it_has(target):
    backend = get_backend(target)
    for capability, feature in FEATURES.items():
        methods = [n for n, _ in inspect.getmembers(feature, inspect.isfunction) if not n.startswith("_")]
        assert methods, f"feature {capability} declares no method"
        has_all = all(callable(getattr(backend, n, None)) for n in methods)
        assert (capability in capabilities(backend)) is has_all
        for name in methods if has_all else ():
            # Called the way dl calls it: the protocol's parameters are accepted by name.
            wanted = [p for p in inspect.signature(getattr(feature, name)).parameters if p != "self"]
            accepted = inspect.signature(getattr(backend, name)).parameters
            assert all(p in accepted for p in wanted), f"{target}.{name} does not take {wanted}"


@pytest.mark.parametrize("target", sorted(REGISTRY))
def test_a_scheduler_implements_the_schedule_protocol(target):
    from orchestrator import scheduling

    backend = get_backend(target)
    if Capability.SCHEDULES not in capabilities(backend):
        with pytest.raises(BackendError, match="cannot run schedules"):
            scheduling.scheduler_for(target)  # a target without schedules: one line, not a crash
        return
    scheduler = backend.scheduler()
    assert isinstance(scheduler, Scheduler) and isinstance(scheduler.fires_here, bool)
    for name, _ in inspect.getmembers(Scheduler, inspect.isfunction):
        if not name.startswith("_"):
            wanted = [p for p in inspect.signature(getattr(Scheduler, name)).parameters if p != "self"]
            accepted = inspect.signature(getattr(scheduler, name)).parameters
            assert all(p in accepted for p in wanted), f"{target} scheduler's {name} does not take {wanted}"


def test_scheduling_names_no_target_and_imports_no_backend():
    """The schedule logic every target shares reaches a target only through its Scheduler."""
    import ast

    import orchestrator.scheduling as scheduling

    tree = ast.parse(Path(scheduling.__file__).read_text())
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not strings & set(TARGETS)
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in imported if m and any(m.startswith(f"orchestrator.backends.{t}") for t in TARGETS)]


def test_a_capability_cannot_be_claimed_without_its_method():
    class Partial:
        name = "partial"
        capabilities = frozenset(Capability)  # a claim, not a method: it counts for nothing

        def stop(self, store, run, grace):
            return run

    assert capabilities(Partial()) == {Capability.STOP}
    with pytest.raises(BackendError) as caught:
        require(Partial(), Capability.RESUME)
    assert str(caught.value) == "The partial target cannot resume runs."


@pytest.mark.train
def test_the_api_checks_a_capability_before_calling(dl_home, monkeypatch):
    """A target without a feature gets one line from the API, not an AttributeError."""
    from orchestrator.backends.local import LocalBackend

    class NoStop(LocalBackend):
        stop = None  # type: ignore[assignment]

    run = api.launch("mnist", target="local", overrides=TINY)
    with monkeypatch.context() as patch:
        patch.setattr(Client, "backend", lambda self, target: NoStop())  # the API's backends come from its Client
        with pytest.raises(BackendError, match=r"^The local target cannot stop runs\.$"):
            api.stop(run.id)
    assert api.stop(run.id, grace=30).status.is_terminal


def test_check_refuses_a_channel_it_cannot_read(harness, tmp_path):
    from orchestrator.packaging import build_package
    from orchestrator.settings import dl_home, max_package_mb

    job = api.find_job("mnist")
    package = build_package(job, dl_home() / "packages", max_package_mb())
    spec = api.LaunchSpec(job, package, job.resolve(TINY), {"train": str(tmp_path / "missing")}, harness.options)
    with pytest.raises(DlError) as caught:
        get_backend(harness.target).check(spec)
    assert "train" in caught.value.message and "\n" not in str(caught.value)


# -- a run from start to end -------------------------------------------------------------------


@pytest.mark.train
def test_submit_refresh_logs_artifacts_pull_and_stop_keep_their_contracts(harness, tmp_path):
    backend = get_backend(harness.target)
    plan = api.plan("mnist", target=harness.target, overrides=TINY, options=harness.options)
    described = backend.describe(plan.spec, "contract-run", None)
    assert {"resources", "cost"} <= set(described)

    run = api.start(plan)
    store = open_store()
    # submit returned at once, recorded where the run's log and outputs will be.
    assert run.status in (RunStatus.PENDING, RunStatus.IN_PROGRESS, RunStatus.COMPLETED)
    assert run.log_uri and run.checkpoint_uri and run.model_uri and run.output_uri

    harness.finish(run.id, tmp_path)
    done = backend.refresh(store, store.get(run.id))
    assert done.status is RunStatus.COMPLETED and done.ended_at and "val_acc" in done.metrics
    assert backend.refresh(store, done) == done  # a terminal run is returned unchanged
    rows = store.epoch_metrics(run.id)
    assert [row["epoch"] for row in rows] == [0, 1]  # metrics.csv, read through runtime_io

    log = "".join(backend.read_log(done))
    assert "epoch 2/2" in log
    if Capability.FOLLOW_LOGS in capabilities(backend):
        assert "epoch 2/2" in "".join(backend.follow(done, store))  # ends: the run has ended

    found = backend.artifacts(done)
    assert {a.kind for a in found} >= {"checkpoint", "model"}
    assert {"best.ckpt", "last.ckpt"} <= {a.name for a in found if a.kind == "checkpoint"}
    manifest = backend.checkpoint_manifest(done)
    assert manifest and all(entry.get("sha256") for entry in manifest)

    if Capability.PULL in capabilities(backend):
        root = tmp_path / "pulled"
        items = [api.PullItem(a, root / a.name, None) for a in found if a.kind == "checkpoint"]
        report = backend.download(done, items, root, progress=False)
        assert sorted(report.fetched) == sorted(i.dest for i in items)
        assert not [p for p in root.rglob("*") if p.name.startswith(".") and p.is_file() and "part" in p.name]
        for item in items:
            api.verify_checkpoint(item.dest)
        again = backend.download(done, items, root, progress=False)
        assert again.fetched == [] and sorted(again.skipped) == sorted(i.dest for i in items)

    if Capability.STOP in capabilities(backend):
        assert backend.stop(store, done, grace=1.0) == done  # a finished run: returned unchanged


def test_stop_ends_a_running_run_stopped_and_a_second_stop_changes_nothing(harness, tmp_path):
    backend = get_backend(harness.target)
    if Capability.STOP not in capabilities(backend):
        with pytest.raises(BackendError, match="cannot stop runs"):
            require(backend, Capability.STOP)
        return
    long = {**TINY, "max_epochs": "500"}
    run = api.launch("mnist", target=harness.target, overrides=long, options=harness.options)
    harness.running(run.id)
    store = open_store()
    asked = backend.stop(store, store.get(run.id), grace=60.0)
    assert asked.status in (RunStatus.STOPPING, RunStatus.STOPPED)
    harness.stopped(run.id)
    ended = backend.refresh(store, store.get(run.id))
    assert ended.status is RunStatus.STOPPED and ended.ended_at and ended.failure_reason is None
    assert backend.stop(store, ended, grace=1.0) == ended


def test_the_registry_is_the_list_of_targets(monkeypatch, tmp_path):
    from orchestrator.config import load_settings

    monkeypatch.chdir(tmp_path)  # no dl.toml here or above
    for target in TARGETS:
        assert load_settings(environ={"DL_TARGET": target}).target == target
    with pytest.raises(DlError) as caught:
        load_settings(environ={"DL_TARGET": "nowhere", "DL_REGION": REGION})
    assert all(target in caught.value.hint for target in TARGETS)


def test_only_a_backends_own_folder_imports_its_sdk():
    """boto3 and botocore are imported under backends/sagemaker/ only (and there inside functions)."""
    import ast

    import orchestrator

    package = Path(orchestrator.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        inside = path.is_relative_to(package / "backends" / "sagemaker")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("boto3", "botocore") for n in names) and not inside:
                offenders.append(str(path.relative_to(package)))
    assert offenders == []


def test_a_backend_adds_its_commands_and_doctor_checks_through_its_features():
    """`dl infra`, `dl gpus` and the AWS lines of `dl doctor` come from the sagemaker backend's
    features, and `dl --help` shows them without importing boto3."""
    import subprocess
    import sys

    backend = get_backend("sagemaker")
    assert {Capability.COMMANDS, Capability.DOCTOR} <= capabilities(backend)
    code = (
        "import sys\nfrom typer.main import get_command\nfrom orchestrator.cli import app\n"
        "names = sorted(get_command(app).commands)\n"
        "print(','.join(names), any(m.split('.')[0] in ('boto3', 'botocore') for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert {"infra", "gpus", "doctor"} <= set(out[0].split(",")) and out[1] == "False"
    skipped = backend.doctor_checks(None, {"gpu": None})  # settings could not be read: each skipped
    assert [c.name for c in skipped] == ["region", "credentials", "stack", "bucket", "role", "quota"]
    assert {c.status for c in skipped} == {"skip"}
