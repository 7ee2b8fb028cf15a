"""Shared fixtures: an isolated DL_HOME per test, the CLI runner, and helpers for real runs."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

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
