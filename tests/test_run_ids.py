"""Generated run ids: ASCII, valid SageMaker job names whatever the job is called, and drawn again
when the store already holds one (the runs table's primary key decides, in real SQLite)."""

from __future__ import annotations

import secrets
import time

import pytest

from orchestrator import api
from orchestrator.runids import new_run_id, valid_run_name
from orchestrator.store import Run, RunStatus, open_store
from tests.conftest import TINY, invoke, launched_id


@pytest.mark.parametrize(
    ("job", "head"),
    [
        ("日本", "job-"),
        ("Ünet v2", "unet-v2-"),
        ("ｍｎｉｓｔ", "mnist-"),
        ("日本-mnist", "mnist-"),
        ("a" * 80, "a" * 44 + "-"),
    ],
)
def test_generated_ids_are_ascii_sagemaker_job_names(job, head):
    run_id = new_run_id(job, now=0)
    assert run_id.isascii() and run_id.startswith(head), run_id
    assert valid_run_name(run_id) == run_id
    assert len(run_id) <= 63


def test_two_jobs_that_transliterate_to_nothing_get_different_ids():
    assert new_run_id("日本", now=0)[:10] != new_run_id("中国", now=0)[:10]


@pytest.mark.train
def test_a_generated_id_that_is_taken_is_drawn_again(dl_home, monkeypatch):
    """The first two draws give an id a run already has (this minute's and the next's, so the
    test holds across a minute's turn); the launch takes the third and the old run is untouched."""
    store = open_store()
    now = time.time()
    taken = {new_run_id("mnist", now=t).rsplit("-", 1)[0] + "-aaaa" for t in (now, now + 60)}
    for run_id in taken:
        store.insert(Run(id=run_id, job="mnist", target="local", status=RunStatus.COMPLETED, created_at=now - 60))
    draws = iter(["aaaa", "aaaa", "bbbb"])
    real = secrets.token_hex
    monkeypatch.setattr(secrets, "token_hex", lambda n=None: next(draws) if n == 2 else real(n))

    result = invoke("launch", "mnist", "--local", *TINY)

    assert result.exit_code == 0, result.output
    run_id = launched_id(result.stdout)
    assert run_id.endswith("-bbbb")
    assert api.wait(run_id, timeout=180).status is RunStatus.COMPLETED
    for old in taken:
        assert store.get(old).status is RunStatus.COMPLETED and store.get(old).job_dir is None
