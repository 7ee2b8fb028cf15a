"""Shared fixtures: an isolated DL_HOME per test, the CLI runner, and helpers for real runs.

The ``train`` marker: a test that needs the ``train`` extra (torch, torchvision, Lightning,
scikit-learn, matplotlib) is marked ``@pytest.mark.train``; a file whose every test does, at its
top with ``pytestmark = pytest.mark.train`` (only such a file may import them at its top). A test
needs it when it trains or smoke-tests (``dl launch``/``sweep``/``schedule create`` of a local
run, ``--dry-run``, AWS's toolkit on a real package), uses a fixture that does, plots a PNG, or
imports one of those libraries. ``pytest -m "not train"`` runs the rest in a venv without the
extra (README, "Two commands").

The marker is enforced: while an unmarked test runs (setup and teardown included) these
libraries cannot be imported, in this process or in any Python it starts that keeps PYTHONPATH
(stand-ins that raise come first on it), so a test that needs them and lacks the marker fails
in a venv that has them too, with an error that names it. In this process they can still be
found (``importlib.util.find_spec``) without being imported, as where they are installed. A
Python started with an environment of its own (the conformance tests start AWS's toolkit so)
escapes the stand-ins: running ``-m "not train"`` in a venv without the extra is the last word.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

# -- the train marker ------------------------------------------------------------------------

# What the `train` extra brings (pyproject.toml), by import name.
TORCH_FAMILY = ("torch", "torchvision", "torchmetrics", "lightning", "lightning_fabric", "pytorch_lightning")
TRAIN_MODULES = frozenset((*TORCH_FAMILY, "sklearn", "matplotlib"))
_UNMARKED = "DL_TEST_UNMARKED"  # the node id of the unmarked test running, for the stand-ins
_REFUSAL = "{nodeid} imports {name} but is not marked train: add @pytest.mark.train (see tests/conftest.py)."
_STAND_IN = (  # the whole of each stand-in package
    "import os\n"
    f"raise ModuleNotFoundError({_REFUSAL!r}.format(nodeid=os.environ.get({_UNMARKED!r}), name=__name__), "
    "name=__name__)\n"
)
_STAND_INS = pytest.StashKey[Path]()


def _train_deselected(config) -> bool:
    """Whether ``-m EXPR`` deselects a test marked train (pytest's own evaluator of -m)."""
    expr = config.option.markexpr
    if not expr:
        return False
    from _pytest.mark.expression import Expression

    return not Expression.compile(expr).evaluate(lambda name, **kwargs: name == "train")


def _wholly_train(path: Path) -> bool:
    """Whether a test file marks all of itself train (a top-level ``pytestmark`` naming it)."""
    for node in ast.parse(path.read_bytes()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            return "pytest.mark.train" in ast.unparse(node.value)
    return False


def pytest_ignore_collect(collection_path: Path, config):
    """With train deselected, a file that is train as a whole is not even imported (it may import
    torch at its top), so that `pytest -m "not train"` runs where the train extra is missing."""
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        if _train_deselected(config) and _wholly_train(collection_path):
            return True
    return None


class _Refuse(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Lets the train modules be found (``importlib.util.find_spec``, as dl's environment checks
    do) but not imported in this process; the error names the test to mark."""

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in TRAIN_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    spec.loader = self
                    return spec
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(_REFUSAL.format(nodeid=self.nodeid, name=spec.name), name=spec.name)

    def exec_module(self, module) -> None:  # never reached: create_module refuses
        raise ModuleNotFoundError(_REFUSAL.format(nodeid=self.nodeid, name=module.__name__))


def pytest_configure(config) -> None:
    """Stand-ins for the train modules that a Python started by an unmarked test finds first."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="dl-test-no-train-"))
    for name in TRAIN_MODULES:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(_STAND_IN)
    config.stash[_STAND_INS] = folder


def pytest_unconfigure(config) -> None:
    folder = config.stash.get(_STAND_INS, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Runs an unmarked test (setup, call, teardown) with the train modules out of reach."""
    if item.get_closest_marker("train") is not None:
        return (yield)
    hidden = {name: module for name, module in sys.modules.items() if name.partition(".")[0] in TRAIN_MODULES}
    for name in hidden:
        del sys.modules[name]
    refuse = _Refuse(item.nodeid)
    sys.meta_path.insert(0, refuse)
    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", _UNMARKED)}
    inherited = [saved["PYTHONPATH"]] if saved["PYTHONPATH"] else []
    os.environ["PYTHONPATH"] = os.pathsep.join([str(item.config.stash[_STAND_INS]), *inherited])
    os.environ[_UNMARKED] = item.nodeid
    try:
        return (yield)
    finally:
        sys.meta_path.remove(refuse)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.modules.update(hidden)


REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "trainjobs" / "mnist"
# Small but real training: two epochs of a few batches on scikit-learn's digits.
TINY = ["--set", "max_epochs=2", "--set", "limit_train_batches=4", "--set", "limit_val_batches=2"]


@pytest.fixture
def dl_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dl-home"
    monkeypatch.setenv("DL_HOME", str(home))
    monkeypatch.delenv("DL_TARGET", raising=False)
    monkeypatch.delenv("DL_DEBUG", raising=False)
    return home


def invoke(*args: str):
    """Run `dl ARGS` in-process; returns click's Result (stdout, stderr, exit_code)."""
    from orchestrator.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def launched_id(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("Launched "):
            return line.split()[1]
    raise AssertionError(f"no 'Launched' line in:\n{output}")


def wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def load_job_module(path: Path, name: str):
    """Import a job's module by file path under a unique name (jobs all have model.py/data.py)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def runs_json() -> list[dict]:
    result = invoke("runs", "--json", "--limit", "0")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def broken_job(tmp_path) -> Path:
    """A copy of the mnist job whose training_step divides by zero: a deliberate bug."""
    job = tmp_path / "jobs" / "broken"
    shutil.copytree(MNIST, job, ignore=shutil.ignore_patterns("__pycache__"))
    source = (job / "model.py").read_text()
    marker = "def training_step(self, batch, batch_idx):"
    assert marker in source, "the mnist model changed shape; update this fixture"
    (job / "model.py").write_text(source.replace(marker, marker + "\n        1 / 0", 1))
    return job


# -- AWS: a moto server on 127.0.0.1, real HTTP ---------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def moto_endpoint():
    """The moto server every AWS test talks to: the one .ci/run started (DL_TEST_MOTO_ENDPOINT),
    else one this session starts itself on a free loopback port."""
    import os
    import subprocess

    given = os.environ.get("DL_TEST_MOTO_ENDPOINT")
    if given:
        wait_for(lambda: _answers(given), timeout=30, what=f"the moto server at {given}")
        yield given
        return
    port = _free_port()
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or _answers(url), timeout=30, what="moto_server to start")
        assert proc.poll() is None, "moto_server exited at start; is moto[server] installed?"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


BUCKET = "dl-test-bucket"
REGION = "us-east-1"


@pytest.fixture
def aws(moto_endpoint, dl_home, monkeypatch, tmp_path):
    """A fresh moto account (state reset) with a bucket and a SageMaker execution role; the
    environment points boto3 at it with dummy credentials, and dl at the bucket and role."""
    import urllib.request

    import boto3

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"), timeout=10)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "DL_PROFILE", "DL_CONFIG", "DL_GPU", "DL_SPOT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.chdir(tmp_path)  # no dl.toml from the repository or above
    session = boto3.session.Session(region_name=REGION)
    session.client("s3").create_bucket(Bucket=BUCKET)
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
    )
    role = session.client("iam").create_role(RoleName="dl-sagemaker-execution", AssumeRolePolicyDocument=trust)
    monkeypatch.setenv("DL_REGION", REGION)
    monkeypatch.setenv("DL_BUCKET", BUCKET)
    monkeypatch.setenv("DL_ROLE_ARN", role["Role"]["Arn"])
    return session
