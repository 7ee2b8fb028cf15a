"""The run store: real SQLite files under tmp_path, opened and reopened the way dl does."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from orchestrator import store
from orchestrator.errors import DlError, RunNotFound, StoreError, UsageError
from orchestrator.store import Run, RunStatus, Store

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def make_run(run_id: str, *, created_at: float = T0, **fields) -> Run:
    base = {"job": "mnist", "target": "local", "status": RunStatus.PENDING}
    return Run(id=run_id, created_at=created_at, **{**base, **fields})


def assert_one_line(err: DlError) -> None:
    assert err.message and "\n" not in err.message
    assert "\n" not in err.hint


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "dl-home"


@pytest.fixture
def db(home):
    s = Store(home)
    yield s
    s.close()


# -- opening ---------------------------------------------------------------------------------------


def test_opening_creates_home_and_a_wal_database_at_the_current_schema(tmp_path):
    home = tmp_path / "a" / "b" / "dl-home"
    s = Store(home)
    s.close()

    assert (home / "dl.db").is_file()
    assert sorted(p.name for p in home.iterdir() if p.name.startswith(".write-test")) == []
    raw = sqlite3.connect(home / "dl.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
        assert store.SCHEMA_VERSION >= 1
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "runs" in tables
    finally:
        raw.close()


def test_reopening_keeps_runs_and_does_not_migrate_again(home):
    first = Store(home)
    first.insert(make_run("r1"))
    first.close()

    second = Store(home)
    try:
        assert second.get("r1").id == "r1"
        assert second.count() == 1
    finally:
        second.close()


def test_home_under_a_regular_file_is_a_store_error_naming_dl_home(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    home = blocker / "home"

    with pytest.raises(StoreError, match="DL_HOME") as info:
        Store(home)

    assert str(home) in info.value.message
    assert "DL_HOME" in info.value.hint
    assert_one_line(info.value)
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("garbage", [b"\x00\xffnot sqlite at all" * 300, b"garbage"])
def test_corrupt_database_is_a_store_error_and_left_untouched(home, garbage):
    home.mkdir(parents=True)
    path = home / "dl.db"
    path.write_bytes(garbage)

    with pytest.raises(StoreError, match="cannot be opened") as info:
        Store(home)

    assert str(path) in info.value.message
    assert info.value.hint
    assert_one_line(info.value)
    assert path.read_bytes() == garbage


def test_database_from_a_newer_dl_says_to_upgrade(home):
    home.mkdir(parents=True)
    raw = sqlite3.connect(home / "dl.db")
    raw.execute("CREATE TABLE runs (id TEXT PRIMARY KEY)")
    raw.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()

    with pytest.raises(StoreError, match="newer than this dl") as info:
        Store(home)

    assert "Upgrade dl" in info.value.hint
    assert_one_line(info.value)
    raw = sqlite3.connect(home / "dl.db")
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION + 1
        assert [r[1] for r in raw.execute("PRAGMA table_info(runs)")] == ["id"]  # not migrated
    finally:
        raw.close()


# -- reading and writing ---------------------------------------------------------------------------


def full_run(run_id: str = "mnist-20240101-abc") -> Run:
    return Run(
        id=run_id,
        job="mnist",
        target="sagemaker",
        status=RunStatus.IN_PROGRESS,
        params={"lr": 0.002, "batch_size": 64, "fast_dev_run": False, "precision": "16-mixed", "n": None},
        package_hash="ab" * 32,
        git_commit="0123456789abcdef",
        git_dirty=True,
        created_at=T0 + 0.25,
        started_at=T0 + 1.5,
        ended_at=T0 + 61.75,
        failure_reason="CUDA out of memory",
        metrics={"val_acc": 0.9875, "epoch": 3, "history": [0.5, 0.75]},
        data={"train": "s3://bucket/train/"},
        job_dir="/work/trainjobs/mnist",
        log_uri="s3://bucket/logs",
        checkpoint_uri="s3://bucket/ckpt",
        model_uri="s3://bucket/model.tar.gz",
        output_uri="s3://bucket/output",
        backend_state={"arn": "arn:aws:sagemaker:eu-west-1:1:training-job/x", "attempt": 2},
    )


def test_insert_and_get_round_trip_every_field(db):
    run = full_run()
    db.insert(run)

    got = db.get(run.id)

    assert got == run
    assert isinstance(got.status, RunStatus)
    assert got.git_dirty is True
    assert got.metrics["val_acc"] == 0.9875
    assert got.params["fast_dev_run"] is False
    assert got.created_at == T0 + 0.25


@pytest.mark.parametrize("dirty", [True, False, None])
def test_git_dirty_keeps_true_false_and_unknown_apart(db, dirty):
    db.insert(make_run("r", git_dirty=dirty))

    assert db.get("r").git_dirty is dirty


def test_defaults_round_trip_as_empty_maps_and_nones(db):
    db.insert(make_run("bare"))
    got = db.get("bare")

    assert (got.params, got.metrics, got.data, got.backend_state) == ({}, {}, {}, {})
    assert (got.started_at, got.ended_at, got.package_hash, got.git_dirty) == (None, None, None, None)
    assert got.duration is None


def test_list_filters_orders_newest_first_and_limits(db):
    db.insert(make_run("old", created_at=T0, job="mnist", target="local", status=RunStatus.COMPLETED))
    db.insert(make_run("mid", created_at=T0 + 10, job="cifar", target="sagemaker", status=RunStatus.FAILED))
    db.insert(make_run("new", created_at=T0 + 20, job="mnist", target="sagemaker"))
    db.insert(make_run("tie-a", created_at=T0 + 5, job="mnist", target="local"))
    db.insert(make_run("tie-b", created_at=T0 + 5, job="mnist", target="local"))

    assert [r.id for r in db.list()] == ["new", "mid", "tie-b", "tie-a", "old"]
    assert [r.id for r in db.list(job="mnist")] == ["new", "tie-b", "tie-a", "old"]
    assert [r.id for r in db.list(job="cifar")] == ["mid"]
    assert [r.id for r in db.list(status=RunStatus.PENDING)] == ["new", "tie-b", "tie-a"]
    assert [r.id for r in db.list(status=RunStatus.STOPPED)] == []
    assert [r.id for r in db.list(target="sagemaker")] == ["new", "mid"]
    assert [r.id for r in db.list(job="mnist", target="sagemaker")] == ["new"]
    assert [r.id for r in db.list(job="mnist", status=RunStatus.COMPLETED, target="local")] == ["old"]
    assert [r.id for r in db.list(limit=2)] == ["new", "mid"]
    assert [r.id for r in db.list(job="mnist", limit=1)] == ["new"]
    assert db.count() == 5


def test_count_and_exists(db):
    assert db.count() == 0
    assert not db.exists("r1")

    db.insert(make_run("r1"))
    db.insert(make_run("r2"))

    assert db.count() == 2
    assert db.exists("r1") and not db.exists("r3")


def test_update_sets_fields_and_rejects_unknown_names(db):
    db.insert(make_run("r"))

    db.update("r", metrics={"val_acc": 0.5}, log_uri="/logs/r", git_dirty=False)
    got = db.get("r")
    assert (got.metrics, got.log_uri, got.git_dirty) == ({"val_acc": 0.5}, "/logs/r", False)

    with pytest.raises(ValueError, match="nonsense"):
        db.update("r", nonsense=1)
    with pytest.raises(ValueError):
        db.update("r", id="other")
    assert db.get("r") == got


def test_merge_backend_state_keeps_existing_keys(db):
    db.insert(make_run("r", backend_state={"arn": "x", "attempt": 1}))

    db.merge_backend_state("r", attempt=2, region="eu-west-1")

    assert db.get("r").backend_state == {"arn": "x", "attempt": 2, "region": "eu-west-1"}


def test_duplicate_id_is_a_usage_error_and_keeps_the_original(db):
    original = make_run("dup", job="mnist", params={"lr": 1.0})
    db.insert(original)

    with pytest.raises(UsageError, match="already exists") as info:
        db.insert(make_run("dup", job="cifar", params={"lr": 2.0}, created_at=T0 + 99))

    assert "'dup'" in info.value.message
    assert "--name" in info.value.hint
    assert_one_line(info.value)
    assert db.get("dup") == original
    assert db.count() == 1


def test_unknown_id_is_run_not_found_with_close_ids(db):
    db.insert(make_run("mnist-20240101-abc123", created_at=T0))
    db.insert(make_run("cifar-20240101-zzz999", created_at=T0 + 1))

    with pytest.raises(RunNotFound, match="No run 'abc123'") as info:
        db.get("abc123")

    err = info.value
    assert err.exit_code == 2
    assert isinstance(err, UsageError)
    assert "Did you mean mnist-20240101-abc123?" in err.hint
    assert "cifar" not in err.hint
    assert "dl runs" in err.hint
    assert_one_line(err)


def test_unknown_id_without_anything_close_has_no_suggestion(db):
    db.insert(make_run("mnist-1"))

    with pytest.raises(RunNotFound) as info:
        db.get("qqq")

    assert "Did you mean" not in info.value.hint
    assert "dl runs" in info.value.hint


@pytest.mark.parametrize("wildcard", ["%", "_"])
def test_sql_wildcards_in_an_unknown_id_are_not_suggestions_for_every_run(db, wildcard):
    db.insert(make_run("mnist-1"))

    with pytest.raises(RunNotFound) as info:
        db.get(wildcard)

    assert "mnist-1" not in info.value.hint


# -- transitions -----------------------------------------------------------------------------------


def test_pending_to_in_progress_to_completed_sets_times(db):
    db.insert(make_run("r"))

    assert db.mark_in_progress("r", started_at=T0 + 10) is True
    running = db.get("r")
    assert running.status is RunStatus.IN_PROGRESS
    assert running.started_at == T0 + 10
    assert running.ended_at is None

    assert db.mark_finished("r", RunStatus.COMPLETED, metrics={"val_acc": 0.99}, ended_at=T0 + 70) is True
    done = db.get("r")
    assert done.status is RunStatus.COMPLETED
    assert (done.started_at, done.ended_at) == (T0 + 10, T0 + 70)
    assert done.duration == 60
    assert done.metrics == {"val_acc": 0.99}
    assert done.failure_reason is None


def test_transitions_default_to_now(db):
    db.insert(make_run("r"))

    db.mark_in_progress("r")
    db.mark_finished("r", RunStatus.FAILED, failure_reason="boom")
    got = db.get("r")

    assert got.started_at > T0 and got.ended_at >= got.started_at
    assert got.failure_reason == "boom"


def test_stopping_then_stopped(db):
    db.insert(make_run("r"))
    db.mark_in_progress("r", started_at=T0)

    assert db.mark_stopping("r") is True
    assert db.get("r").status is RunStatus.STOPPING
    assert db.mark_in_progress("r") is False  # a stopping run does not go back
    assert db.get("r").status is RunStatus.STOPPING
    assert db.mark_finished("r", RunStatus.STOPPED, ended_at=T0 + 5) is True
    assert db.get("r").status is RunStatus.STOPPED


def test_pending_run_can_fail_before_it_starts(db):
    db.insert(make_run("r"))

    assert db.mark_finished("r", RunStatus.FAILED, failure_reason="quota", ended_at=T0 + 1) is True
    got = db.get("r")
    assert (got.status, got.failure_reason, got.started_at) == (RunStatus.FAILED, "quota", None)


@pytest.mark.parametrize("terminal", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED])
def test_terminal_run_is_never_moved_again(db, terminal):
    db.insert(make_run("r"))
    db.mark_in_progress("r", started_at=T0)
    db.mark_finished("r", terminal, failure_reason="first", metrics={"val_acc": 0.5}, ended_at=T0 + 9)
    before = db.get("r")

    assert db.mark_in_progress("r", started_at=T0 + 100) is False
    assert db.mark_stopping("r") is False
    for late in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED):
        assert db.mark_finished("r", late, failure_reason="late", metrics={"x": 1}, ended_at=T0 + 200) is False

    assert db.get("r") == before


def test_transitions_of_an_unknown_run_return_false(db):
    assert db.mark_in_progress("ghost") is False
    assert db.mark_stopping("ghost") is False
    assert db.mark_finished("ghost", RunStatus.FAILED) is False
    assert db.count() == 0


@pytest.mark.parametrize("status", [RunStatus.PENDING, RunStatus.IN_PROGRESS, RunStatus.STOPPING])
def test_mark_finished_with_a_live_status_is_a_programming_error(db, status):
    db.insert(make_run("r"))

    with pytest.raises(ValueError, match="not terminal"):
        db.mark_finished("r", status)

    assert db.get("r").status is RunStatus.PENDING


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (RunStatus.PENDING, False),
        (RunStatus.IN_PROGRESS, False),
        (RunStatus.STOPPING, False),
        (RunStatus.COMPLETED, True),
        (RunStatus.FAILED, True),
        (RunStatus.STOPPED, True),
    ],
)
def test_is_terminal(status, terminal):
    assert status.is_terminal is terminal
    assert (status.value in store.TERMINAL_VALUES) is terminal


def test_every_status_has_a_terminal_verdict():
    assert {s for s in RunStatus if s.is_terminal} == {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED}
    assert len(RunStatus) == 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("completed", RunStatus.COMPLETED),
        ("COMPLETED", RunStatus.COMPLETED),
        ("InProgress", RunStatus.IN_PROGRESS),
        ("inprogress", RunStatus.IN_PROGRESS),
        ("Stopping", RunStatus.STOPPING),
        ("pending", RunStatus.PENDING),
        ("FAILED", RunStatus.FAILED),
        ("stopped", RunStatus.STOPPED),
    ],
)
def test_parse_is_case_insensitive(text, expected):
    assert RunStatus.parse(text) is expected


def test_parse_junk_lists_the_statuses():
    with pytest.raises(UsageError, match="Unknown status 'runing'") as info:
        RunStatus.parse("runing")

    for status in RunStatus:
        assert status.value in info.value.hint
    assert info.value.exit_code == 2
    assert_one_line(info.value)


# -- JSON shape ------------------------------------------------------------------------------------

STABLE_KEYS = {
    "id", "job", "target", "status", "params", "metrics", "logs", "checkpoints", "model", "created_at",
    "duration_s", "terminal", "package_hash", "git_commit", "git_dirty", "failure_reason",
}  # fmt: skip


def test_to_json_has_the_documented_stable_keys(db):
    db.insert(full_run("r"))
    out = db.get("r").to_json()

    assert STABLE_KEYS <= set(out)
    assert "backend_state" not in out  # internal: may hold ARNs and backend details
    assert not {"log_uri", "checkpoint_uri", "model_uri"} & set(out)
    assert out["id"] == "r"
    assert out["job"] == "mnist"
    assert out["target"] == "sagemaker"
    assert out["status"] == "InProgress"
    assert out["terminal"] is False
    assert out["params"]["lr"] == 0.002
    assert out["metrics"]["val_acc"] == 0.9875
    assert out["logs"] == "s3://bucket/logs"
    assert out["checkpoints"] == "s3://bucket/ckpt"
    assert out["model"] == "s3://bucket/model.tar.gz"
    assert out["created_at"] == "2023-11-14T22:13:20Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", out["created_at"])
    assert out["duration_s"] == 60.25
    assert out["package_hash"] == "ab" * 32
    assert out["git_commit"] == "0123456789abcdef"
    assert out["git_dirty"] is True
    assert out["failure_reason"] == "CUDA out of memory"


def test_to_json_of_a_fresh_run(db):
    db.insert(make_run("fresh", status=RunStatus.COMPLETED))
    out = db.get("fresh").to_json()

    assert out["duration_s"] is None
    assert out["terminal"] is True
    assert (out["logs"], out["checkpoints"], out["model"], out["git_dirty"]) == (None, None, None, None)
    assert (out["params"], out["metrics"]) == ({}, {})


# -- several writers -------------------------------------------------------------------------------


def test_two_stores_on_one_home_see_each_others_writes(home):
    writer, reader = Store(home), Store(home)
    try:
        writer.insert(make_run("r"))
        assert reader.get("r").status is RunStatus.PENDING

        assert reader.mark_in_progress("r", started_at=T0) is True
        assert writer.get("r").status is RunStatus.IN_PROGRESS

        writer.mark_finished("r", RunStatus.COMPLETED, ended_at=T0 + 1)
        assert reader.mark_finished("r", RunStatus.FAILED, failure_reason="late") is False  # late writer loses
        assert reader.get("r").status is RunStatus.COMPLETED
        assert writer.get("r").failure_reason is None
    finally:
        writer.close()
        reader.close()


def test_reader_is_not_blocked_by_an_open_write_transaction(home):
    s = Store(home)
    s.insert(make_run("committed"))
    other = sqlite3.connect(home / "dl.db", isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN EXCLUSIVE")  # in WAL mode this still lets readers read
        other.execute("INSERT INTO runs (id, job, target, status, created_at) VALUES ('x', 'j', 't', 'Pending', 1)")
        assert [r.id for r in s.list()] == ["committed"]
        other.execute("COMMIT")
        assert {r.id for r in s.list()} == {"committed", "x"}
    finally:
        other.close()
        s.close()


def test_insert_many_then_list_returns_the_newest(db):
    db.insert_many(make_run(f"run-{i:04d}", created_at=T0 + i) for i in range(1000))

    newest = db.list(limit=20)

    assert db.count() == 1000
    assert [r.id for r in newest] == [f"run-{i:04d}" for i in range(999, 979, -1)]


def test_insert_many_with_a_duplicate_is_a_usage_error(db):
    db.insert(make_run("r-1"))

    with pytest.raises(UsageError, match="already exists"):
        db.insert_many([make_run("r-2"), make_run("r-1")])


def test_failed_insert_many_rolls_back_and_leaves_the_store_usable(home):
    s = Store(home)
    other = Store(home)
    try:
        s.insert(make_run("r-1"))

        with pytest.raises((UsageError, sqlite3.IntegrityError)):
            s.insert_many([make_run("r-2"), make_run("r-3"), make_run("r-1")])

        assert s.count() == 1  # none of the batch, not even in this connection
        assert not s.exists("r-2")
        s.insert_many([make_run("r-4")])  # no transaction is left open
        assert other.count() == 2
        assert other.exists("r-4")
    finally:
        s.close()
        other.close()


def test_open_store_uses_dl_home(monkeypatch, tmp_path):
    monkeypatch.setenv("DL_HOME", str(tmp_path / "from-env"))

    s = store.open_store()
    try:
        assert s.path == (tmp_path / "from-env" / "dl.db").resolve()
        assert s.path.is_file()
    finally:
        s.close()
