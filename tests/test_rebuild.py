"""The store can be rebuilt: every run folder carries the run's record, `dl store rebuild` makes dl.db
again from them (and the schedules' records, and SageMaker's dl-tagged jobs), and a scheduler
killed between claiming a fire time and starting its run is settled on the next tick.

SageMaker through the moto server on 127.0.0.1 (tests/conftest.py); moto marks a job Completed
at once, which is the state these tests need. Processes are real: the scheduler is killed by the
fault hook the code exposes (DL_TEST_FAULT=after-claim:kill) inside a real `dl schedule run --once`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import api, scheduling
from orchestrator.errors import UsageError
from orchestrator.store import Run, RunStatus, Store, open_store
from tests.conftest import MNIST, REPO, TINY, invoke, launched_id, runs_json, wait_for

OVERRIDES = dict(s.split("=", 1) for s in TINY[1::2])


def _wait_terminal(run_id: str, timeout: float = 240) -> Run:
    return wait_for(lambda: (r := api.show(run_id)).status.is_terminal and r, timeout, f"run {run_id} to end")


def _shown(ids) -> dict[str, dict]:
    out = {}
    for run_id in ids:
        result = invoke("show", run_id, "--json")
        assert result.exit_code == 0, result.output
        out[run_id] = json.loads(result.stdout)
    return out


def _rebuild() -> dict:
    result = invoke("store", "rebuild", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _db_files(home: Path) -> list[Path]:
    return [home / name for name in ("dl.db", "dl.db-wal", "dl.db-shm")]


@pytest.mark.train
def test_rebuild_gives_back_every_run_and_schedule(aws, dl_home, broken_job, tmp_path):
    # Real local runs: one completed, one failed, one stopped, one in a sweep, one from a schedule.
    completed = launched_id(invoke("launch", str(MNIST), "--local", *TINY).stdout)
    failed = launched_id(invoke("launch", str(broken_job), "--local", *TINY).stdout)
    stopped = launched_id(invoke("launch", str(MNIST), "--local", "--set", "max_epochs=100000").stdout)
    log = dl_home / "runs" / stopped / "dl" / "log.txt"
    wait_for(lambda: log.is_file() and "epoch 1/" in log.read_text(), 240, "the run to train")
    assert invoke("stop", stopped, "--grace", "60").exit_code == 0
    swept = invoke("sweep", str(MNIST), "--local", "--set", "lr=0.01", *TINY, "--wait")
    assert swept.exit_code == 0, swept.output
    [in_sweep] = [line.split()[1] for line in swept.stdout.splitlines() if line.startswith("Launched ")]
    created = time.time()
    made = invoke("schedule", "create", "tiny", "--job", str(MNIST), "--cron", "rate(1 day)", "--local",
                  "--promote-if", "val_acc:max", *TINY)  # fmt: skip
    assert made.exit_code == 0, made.output
    [firing] = scheduling.tick(created + 86400 + 60)
    scheduled = firing.run_id
    # And a SageMaker job launched by dl (moto holds it).
    cloud = invoke("launch", str(MNIST), "--target", "sagemaker", "--gpu", "T4", "--json")
    assert cloud.exit_code == 0, cloud.output
    cloud_id = json.loads(cloud.stdout)["id"]
    for run_id in (completed, failed, scheduled):
        _wait_terminal(run_id)
    scheduling.tick(created + 86400 + 120)  # reviews the scheduled run: its promotion is decided

    statuses = {r["id"]: r["status"] for r in runs_json()}
    assert statuses == {completed: "Completed", failed: "Failed", stopped: "Stopped", in_sweep: "Completed",
                        scheduled: "Completed", cloud_id: "Completed"}  # fmt: skip
    before = runs_json()
    shown = _shown(statuses)
    schedule_before = json.loads(invoke("schedule", "show", "tiny", "--json").stdout)
    assert shown[scheduled]["promotion"]["promoted"] is True and shown[in_sweep]["sweep"]
    assert shown[failed]["failure_reason"] and shown[completed]["best"] and shown[completed]["metrics"]
    # Every run folder holds the run's record; the cloud run's folder holds only that.
    assert (dl_home / "runs" / cloud_id / "dl" / "run.json").is_file()
    assert sorted(p.name for p in (dl_home / "runs" / cloud_id).iterdir()) == ["dl"]
    record = json.loads((dl_home / "runs" / failed / "dl" / "run.json").read_text())
    assert record["run"]["status"] == "Failed" and record["run"]["failure_reason"] == shown[failed]["failure_reason"]
    assert invoke("store", "check").exit_code == 0

    # A rebuild over a working dl.db: the same runs, and the old file kept aside, intact.
    report = _rebuild()
    assert sorted(report["runs"]) == sorted(statuses) and report["schedules"] == ["tiny"] and not report["skipped"]
    kept = [Path(p) for p in report["kept"]]
    assert kept and kept[0].name.startswith("dl.db.before-rebuild-") and kept[0].parent == dl_home
    with sqlite3.connect(kept[0]) as old:
        assert old.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == len(statuses)
    assert runs_json() == before

    # dl.db and its WAL deleted: rebuilt from the run folders, schedules' records and SageMaker.
    for path in _db_files(dl_home):
        path.unlink(missing_ok=True)
    report = _rebuild()
    assert report["kept"] == [] and not report["skipped"] and report["notes"] == []
    after = runs_json()
    assert [r["id"] for r in after] == [r["id"] for r in before]
    for old, new in zip(before, after):
        for key in old:
            assert new[key] == old[key], f"{old['id']}: {key} differs after the rebuild"
    assert _shown(statuses) == shown
    schedule_after = json.loads(invoke("schedule", "show", "tiny", "--json").stdout)
    assert schedule_after == schedule_before
    assert open_store().get_schedule("tiny").last_fire_at == firing.due_at
    assert scheduling.tick(created + 86400 + 180) == []  # the fire time it decided stays decided
    assert invoke("store", "check").exit_code == 0


def test_a_corrupt_database_points_at_the_rebuild(dl_home):
    store = Store(dl_home)
    store.insert(Run(id="kept", job="mnist", target="local", status=RunStatus.COMPLETED, created_at=1.0,
                     params={"lr": 0.1}, metrics={"val_acc": 0.9}))  # fmt: skip
    store.close()
    for path in _db_files(dl_home):
        path.unlink(missing_ok=True)
    garbage = b"this is not a database" * 200
    (dl_home / "dl.db").write_bytes(garbage)

    result = invoke("runs")
    assert result.exit_code != 0
    assert "cannot be opened" in result.stderr and "dl store rebuild" in result.stderr
    assert "Move it aside" not in result.stderr and "Traceback" not in result.stderr
    assert (dl_home / "dl.db").read_bytes() == garbage  # never modified

    report = _rebuild()
    assert report["runs"] == ["kept"]
    assert Path(report["kept"][0]).read_bytes() == garbage  # kept aside, never deleted
    [run] = runs_json()
    assert run["id"] == "kept" and run["params"] == {"lr": 0.1} and run["metrics"] == {"val_acc": 0.9}


def test_a_corrupt_record_is_named_and_skipped(dl_home):
    store = Store(dl_home)
    for name in ("good-1", "bad", "good-2"):
        store.insert(Run(id=name, job="mnist", target="local", status=RunStatus.PENDING, created_at=1.0))
        store.mark_finished(name, RunStatus.FAILED, failure_reason="boom")
    store.close()
    (dl_home / "runs" / "bad" / "dl" / "run.json").write_text('{"version": 1, "kind": "run", "run": {"id": "ba')
    (dl_home / "runs" / "no-record" / "code").mkdir(parents=True)  # a folder whose record is gone
    check = invoke("store", "check")
    assert check.exit_code == 1 and "run bad: the record" in check.stdout
    for path in _db_files(dl_home):
        path.unlink(missing_ok=True)

    result = invoke("store", "rebuild")
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stderr.splitlines() if line.startswith("Skipped ")]
    assert len(skipped) == 2
    assert any(str(dl_home / "runs" / "bad" / "dl" / "run.json") in line and "cannot be read" in line
               for line in skipped)  # fmt: skip
    assert any("no-record" in line and "No record" in line for line in skipped)
    runs = {r["id"]: r for r in runs_json()}
    assert sorted(runs) == ["good-1", "good-2"]
    assert runs["good-1"]["status"] == "Failed" and runs["good-1"]["failure_reason"] == "boom"


def test_rebuild_refuses_while_a_process_has_the_database_open(dl_home):
    Store(dl_home).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT 1');"
         " print('open', flush=True); sys.stdin.read()", str(dl_home / "dl.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        result = invoke("store", "rebuild")
        assert result.exit_code == 1 and f"is open in process {holder.pid}" in result.stderr
        assert not list(dl_home.glob("dl.db.before-rebuild-*"))
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_sync_all_imports_a_dl_job_launched_from_another_home(aws, dl_home, monkeypatch, tmp_path):
    launched = invoke("launch", str(MNIST), "--target", "sagemaker", "--gpu", "T4", "--set", "lr=0.005", "--json")
    assert launched.exit_code == 0, launched.output
    theirs = json.loads(launched.stdout)
    sm = aws.client("sagemaker", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    request = sm.describe_training_job(TrainingJobName=theirs["id"])
    sm.create_training_job(TrainingJobName="not-dls", AlgorithmSpecification=request["AlgorithmSpecification"],
                           RoleArn=request["RoleArn"], OutputDataConfig=request["OutputDataConfig"],
                           ResourceConfig=request["ResourceConfig"], StoppingCondition=request["StoppingCondition"],
                           Tags=[{"Key": "team", "Value": "x"}])  # fmt: skip

    monkeypatch.setenv("DL_HOME", str(tmp_path / "another-home"))
    assert runs_json() == []
    plain = invoke("runs", "--sync")  # schedule runs only: this one was not started by a schedule
    assert plain.exit_code == 0 and runs_json() == []
    synced = invoke("runs", "--sync", "--all")
    assert synced.exit_code == 0, synced.output
    assert "Imported 1 run(s) dl started elsewhere." in synced.stderr
    [run] = runs_json()
    assert run["id"] == theirs["id"] and run["job"] == "mnist" and run["target"] == "sagemaker"
    assert run["package_hash"] == theirs["package_hash"] and run["params"]["lr"] == 0.005
    assert run["status"] == "Completed" and run["checkpoints"] == theirs["checkpoints"]
    assert (tmp_path / "another-home" / "runs" / run["id"] / "dl" / "run.json").is_file()  # recorded here now
    again = invoke("runs", "--sync", "--all")
    assert again.exit_code == 0 and "Imported" not in again.stderr
    assert invoke("runs", "--all").exit_code == 2  # --all goes with --sync


def test_rebuild_without_sagemaker_settings_says_so(dl_home, monkeypatch):
    for name in ("DL_REGION", "DL_BUCKET", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(dl_home.parent)  # no dl.toml
    result = invoke("store", "rebuild")
    assert result.exit_code == 0, result.output
    assert "Note: sagemaker: not asked for its runs: No AWS region" in result.stderr


# -- a scheduler killed right after claiming a fire time ---------------------------------------


def _schedule_run_once(fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("DL_TEST_FAULT", None)
    if fault:
        env["DL_TEST_FAULT"] = fault
    command = [sys.executable, "-m", "orchestrator", "schedule", "run", "--once"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _due_schedule(name: str) -> float:
    """A local schedule firing hourly whose first fire time passed a minute ago; returns that time."""
    created = float(int(time.time()) - 3600 - 60)
    scheduling.create(name, str(MNIST), expression="rate(1 hour)", target="local",
                      overrides=OVERRIDES, now=created)  # fmt: skip
    return created + 3600


def _killed_after_claim(name: str, due: float):
    killed = _schedule_run_once("after-claim:kill")
    assert killed.returncode == -9, killed.stderr
    [claim] = open_store().firings(name)
    assert (claim.due_at, claim.decision, claim.run_id) == (due, "starting", None)
    assert open_store().list(schedule=name) == []
    return claim


@pytest.mark.train
def test_a_claim_whose_scheduler_was_killed_starts_late_once(dl_home):
    due = _due_schedule("hourly")
    claim = _killed_after_claim("hourly", due)

    settled = _schedule_run_once()
    assert settled.returncode == 0, settled.stderr
    [firing] = open_store().firings("hourly")
    assert firing.due_at == due and firing.decision == "started" and firing.run_id
    assert firing.note.startswith("started late, at ") and claim.note.removeprefix("claimed by ") in firing.note
    assert f"{firing.run_id}" in settled.stdout and "started" in settled.stdout
    assert _wait_terminal(firing.run_id).status is RunStatus.COMPLETED
    assert _schedule_run_once().returncode == 0  # settled once: nothing more starts for it
    assert [r.id for r in open_store().list(schedule="hourly")] == [firing.run_id]


@pytest.mark.train  # `schedule create` of a local schedule checks for the train extra
def test_a_killed_claim_is_missed_when_a_later_catch_up_covers_it(dl_home):
    due = _due_schedule("covered")
    _killed_after_claim("covered", due)
    started = []

    def starter(client, schedule, due_at):  # stands in for training: a Pending run is recorded
        run = Run(id=f"covered-{int(due_at)}", job=schedule.job, target="local", status=RunStatus.PENDING,
                  created_at=time.time(), schedule=schedule.name)  # fmt: skip
        client.store.insert(run)
        started.append(due_at)
        return run

    decisions = scheduling.tick(due + 3 * 3600 + 30, start=starter)
    by_time = {d.due_at: d for d in decisions}
    assert by_time[due].action == "missed" and "catch-up run" in by_time[due].note
    assert by_time[due + 3 * 3600].action == "started" and started == [due + 3 * 3600]
    decided = {f.due_at: f.decision for f in open_store().firings("covered")}
    assert decided == {due: "missed", due + 3 * 3600: "started"}


def test_a_new_run_never_takes_over_an_earlier_runs_record(dl_home):
    store = Store(dl_home)
    store.insert(Run(id="old", job="mnist", target="sagemaker", status=RunStatus.COMPLETED, created_at=1.0))
    store.close()
    record = (dl_home / "runs" / "old" / "dl" / "run.json").read_text()
    for path in _db_files(dl_home):
        path.unlink(missing_ok=True)
    with pytest.raises(UsageError, match="holds the record of an earlier run"):
        Store(dl_home).insert(Run(id="old", job="other", target="sagemaker", status=RunStatus.PENDING, created_at=2.0))
    assert (dl_home / "runs" / "old" / "dl" / "run.json").read_text() == record


def test_a_migration_first_copies_the_database_with_sqlites_backup(dl_home):
    from orchestrator.store import _MIGRATIONS, SCHEMA_VERSION

    dl_home.mkdir(parents=True)
    with sqlite3.connect(dl_home / "dl.db") as raw:  # schema 2: before per-epoch metrics and sweeps
        for script in _MIGRATIONS[:2]:
            raw.executescript(script)
        raw.execute(
            "INSERT INTO runs (id, job, target, status, created_at) VALUES ('old', 'mnist', 'local', 'Completed', 1)"
        )
        raw.execute("PRAGMA user_version = 2")
    raw.close()
    store = Store(dl_home)
    assert store.get("old").status is RunStatus.COMPLETED
    store.close()
    backup = dl_home / "dl.db.before-schema-3"
    with sqlite3.connect(backup) as copy:
        assert copy.execute("PRAGMA user_version").fetchone()[0] == 2
        assert copy.execute("SELECT id FROM runs").fetchall() == [("old",)]
    copy.close()
    with sqlite3.connect(dl_home / "dl.db") as now:
        assert now.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    now.close()
    Store(dl_home).close()  # up to date: no second copy
    assert sorted(p.name for p in dl_home.glob("dl.db.before-*")) == ["dl.db.before-schema-3"]
