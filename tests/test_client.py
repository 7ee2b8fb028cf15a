"""One client per command: one store connection (closed at the end), dl.toml read once, backends built once.

Counts are taken by wrapping dl's own functions (the real ones still run), so a command that
opened the store twice, or walked the folders for dl.toml twice, fails here.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from orchestrator import api, config
from orchestrator.backends.sagemaker import SageMakerBackend
from orchestrator.client import Client
from orchestrator.store import Run, RunStatus, Store, db
from tests.conftest import MNIST, invoke


@pytest.fixture
def counted(monkeypatch):
    """How many times each command opened a store connection and looked for dl.toml."""
    counts = {"opens": 0, "closes": 0, "finds": 0}
    real_init, real_close, real_find = db.Connection.__init__, db.Connection.close, config.find_config

    def opening(self, home):
        counts["opens"] += 1
        real_init(self, home)

    def closing(self):
        counts["closes"] += 1
        real_close(self)

    def finding(*args, **kwargs):
        counts["finds"] += 1
        return real_find(*args, **kwargs)

    monkeypatch.setattr(db.Connection, "__init__", opening)
    monkeypatch.setattr(db.Connection, "close", closing)
    monkeypatch.setattr(config, "find_config", finding)
    return counts


def _finished_run(home, run_id="mnist-done") -> str:
    store = Store(home)
    store.insert(Run(id=run_id, job="mnist", target="local", status=RunStatus.PENDING, created_at=time.time(),
                     job_dir=str(MNIST)))  # fmt: skip
    store.mark_finished(run_id, RunStatus.COMPLETED, metrics={"val_acc": 0.5})
    store.close()
    return run_id


def test_show_and_runs_open_the_store_once_and_close_it(dl_home, counted):
    run_id = _finished_run(dl_home)
    counted.update(opens=0, closes=0)

    shown = invoke("show", run_id)  # the run, its best epoch and its checkpoints: three API calls
    assert shown.exit_code == 0, shown.output
    assert (counted["opens"], counted["closes"]) == (1, 1)

    listed = invoke("runs", "--json")
    assert listed.exit_code == 0, listed.output
    assert (counted["opens"], counted["closes"]) == (2, 2)


def test_a_sagemaker_dry_run_reads_dl_toml_once(dl_home, counted, tmp_path, monkeypatch):
    """check, describe and the default target all need settings; the folders are walked once."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "dl.toml").write_text('[aws]\nregion = "eu-west-1"\n')
    monkeypatch.chdir(project)
    for name in ("DL_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "DL_CONFIG"):
        monkeypatch.delenv(name, raising=False)

    result = invoke("launch", str(MNIST), "--target", "sagemaker", "--dry-run", "--no-smoke-test")

    assert result.exit_code == 0, result.output
    assert "in eu-west-1" in result.output  # dl.toml's region reached the placement
    assert counted["finds"] == 1


def test_api_functions_without_a_client_close_what_they_open(dl_home, counted):
    run_id = _finished_run(dl_home)
    counted.update(opens=0, closes=0)

    assert api.show(run_id).status is RunStatus.COMPLETED
    assert api.best_epoch(api.show(run_id)) is None  # no per-epoch rows stored

    assert counted["opens"] == counted["closes"] == 3


def test_a_client_keeps_one_connection_and_closes_it(dl_home):
    run_id = _finished_run(dl_home)
    with Client() as dl:
        first = dl.store
        assert api.show(run_id, client=dl).id == run_id
        assert api.list_runs(client=dl)[0].id == run_id
        assert dl.store is first  # the API used the client's connection
    with pytest.raises(sqlite3.ProgrammingError):
        first._db.execute("SELECT 1")  # closed with the client


def test_backends_are_built_once_per_client_and_own_their_aws_clients(dl_home, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dl = Client()
    backend = dl.backend("sagemaker")
    assert dl.backend("sagemaker") is backend
    assert backend.aws("eu-west-1") is backend.aws("eu-west-1")
    assert backend.aws("eu-west-1") is not backend.aws("us-east-1")
    # A backend of another Client (another command) makes its own: nothing is cached process-wide.
    assert Client().backend("sagemaker").aws("eu-west-1") is not backend.aws("eu-west-1")
    assert isinstance(backend, SageMakerBackend)
    scheduler = backend.scheduler()
    assert scheduler.backend is backend  # cloud schedules use the same clients and settings
