"""Local schedules: the scheduler's decisions under an injected clock, its lock, and one real firing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest

from orchestrator import api, scheduler_service, scheduling
from orchestrator.client import Client
from orchestrator.store import Run, RunStatus, open_store
from tests.conftest import MNIST, TINY, invoke, wait_for

MONDAY_3AM = datetime(2026, 11, 30, 3, 0, tzinfo=UTC).timestamp()
WEEK = 7 * 86400


@pytest.fixture
def weekly(dl_home):
    """A local schedule firing Mondays 03:00 UTC, created the Wednesday before."""
    created = MONDAY_3AM - 5 * 86400
    scheduling.create(
        "weekly", str(MNIST), expression="0 3 * * 1", target="local", overrides={"max_epochs": "1"}, now=created
    )
    return "weekly"


class Starter:
    """Stands in for ``scheduling.fire``: records a Pending run (no process, so it stays unfinished
    until the test finishes it) instead of training, so decisions can be checked by the dozen."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def __call__(self, dl, schedule, due_at) -> Run:
        run = Run(id=f"{schedule.name}-{int(due_at)}", job=schedule.job, target="local", status=RunStatus.PENDING,
                  created_at=due_at, schedule=schedule.name)  # fmt: skip
        dl.store.insert(run)
        self.started.append(run.id)
        return run


def finish(run_id: str, **metrics) -> None:
    open_store().mark_finished(run_id, RunStatus.COMPLETED, metrics=metrics)


@pytest.mark.train
def test_nothing_fires_before_the_first_fire_time(weekly):
    starter = Starter()
    assert scheduling.tick(MONDAY_3AM - 1, start=starter) == []
    assert starter.started == []


@pytest.mark.train
def test_due_fire_time_starts_once(weekly):
    starter = Starter()
    [decision] = scheduling.tick(MONDAY_3AM + 30, start=starter)
    assert (decision.action, decision.due_at, decision.missed) == ("started", MONDAY_3AM, 0)
    assert decision.run_id == starter.started[0]
    assert scheduling.tick(MONDAY_3AM + 60, start=starter) == []  # decided already
    assert open_store().get(decision.run_id).schedule == "weekly"


@pytest.mark.train
def test_overlap_is_skipped_and_recorded(weekly):
    starter = Starter()
    [first] = scheduling.tick(MONDAY_3AM, start=starter)
    [second] = scheduling.tick(MONDAY_3AM + WEEK, start=starter)  # the first is still Pending
    assert second.action == "skipped" and second.run_id is None
    assert first.run_id in second.note
    assert len(starter.started) == 1
    firings = open_store().firings("weekly")
    assert [(f.decision, f.run_id) for f in firings] == [("skipped", None), ("started", first.run_id)]

    finish(first.run_id, val_acc=0.5)
    [third] = scheduling.tick(MONDAY_3AM + 2 * WEEK, start=starter)
    assert third.action == "started"


@pytest.mark.train
def test_downtime_starts_one_catch_up_run(weekly):
    starter = Starter()
    [decision] = scheduling.tick(MONDAY_3AM + 3 * WEEK + 3600, start=starter)  # four fire times passed
    assert decision.action == "started" and decision.due_at == MONDAY_3AM + 3 * WEEK
    assert decision.missed == 3 and "4 missed" in decision.note
    assert len(starter.started) == 1
    assert scheduling.tick(MONDAY_3AM + 3 * WEEK + 7200, start=starter) == []


@pytest.mark.train
def test_the_state_survives_a_restart(weekly):
    starter = Starter()
    scheduling.tick(MONDAY_3AM, start=starter)
    finish(starter.started[0])
    # A new process reads the same store: the decided fire time does not fire again.
    code = (
        "from orchestrator import scheduling; import sys;"
        f"sys.exit(len(scheduling.tick({MONDAY_3AM + 600}, start=lambda *a: 1/0)))"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.train
def test_paused_schedules_do_not_fire_and_resume_skips_the_paused_time(weekly):
    starter = Starter()
    scheduling.pause("weekly", now=MONDAY_3AM - 60)
    assert scheduling.tick(MONDAY_3AM + 60, start=starter) == []
    scheduling.resume("weekly", now=MONDAY_3AM + 120)
    # The fire time that passed while paused does not fire after resume ...
    assert scheduling.tick(MONDAY_3AM + 180, start=starter) == []
    assert starter.started == []
    # ... the next one does.
    [decision] = scheduling.tick(MONDAY_3AM + WEEK, start=starter)
    assert decision.action == "started" and decision.due_at == MONDAY_3AM + WEEK


@pytest.mark.train
def test_a_failed_start_is_recorded_and_not_retried(weekly):
    def broken(store, schedule, due_at):
        from orchestrator.errors import BackendError

        raise BackendError("torch is not installed in this Python.")

    [decision] = scheduling.tick(MONDAY_3AM, start=broken)
    assert decision.action == "failed" and "torch" in decision.note
    assert scheduling.tick(MONDAY_3AM + 60, start=Starter()) == []


@pytest.mark.train
def test_a_fire_time_is_claimed_once_across_stores(weekly):
    store_a, store_b = open_store(), open_store()
    assert store_a.claim_firing("weekly", MONDAY_3AM, "starting")
    assert not store_b.claim_firing("weekly", MONDAY_3AM, "starting")


def test_only_one_scheduler_holds_the_lock(dl_home):
    results: list[bool] = []
    barrier = threading.Barrier(4)
    locks = [scheduler_service.SchedulerLock() for _ in range(4)]

    def grab(lock):
        barrier.wait()
        results.append(lock.acquire())

    threads = [threading.Thread(target=grab, args=(lock,)) for lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    for lock in locks:
        lock.release()
    again = scheduler_service.SchedulerLock()
    assert again.acquire()  # released: the next scheduler gets it
    again.release()


def test_a_second_dl_schedule_run_is_refused(dl_home):
    runner = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "schedule", "run", "--poll", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock_file = dl_home / "scheduler.lock"
        wait_for(lambda: lock_file.exists() and lock_file.read_text().strip() == str(runner.pid), 60, "the lock")
        result = invoke("schedule", "run", "--poll", "0.1")
        assert result.exit_code != 0
        assert f"Another `dl schedule run` (pid {runner.pid})" in result.stderr
        assert invoke("schedule", "run", "--once").exit_code == 0  # crontab mode: quietly nothing
    finally:
        runner.terminate()
        runner.wait(timeout=30)


@pytest.mark.train
def test_cli_create_list_show_pause_delete(dl_home):
    result = invoke("schedule", "create", "nightly", "--job", "mnist", "--cron", "0 3 * * 1",
                    "--timezone", "Europe/Berlin", "--local", "--promote-if", "val_acc:max")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cron(0 3 ? * 2 *) (Europe/Berlin)" in result.stdout
    assert result.stdout.count("CET") == 3  # the next three fire times
    listed = invoke("schedule", "list").stdout
    assert "nightly" in listed and "active" in listed
    [as_json] = json.loads(invoke("schedule", "list", "--json").stdout)
    assert as_json["expression"] == "cron(0 3 ? * 2 *)" and len(as_json["next_fires"]) == 3
    assert as_json["next_fires"][0].endswith("T03:00:00+01:00")
    assert "val_acc:max" in invoke("schedule", "show", "nightly").stdout
    assert invoke("schedule", "pause", "nightly").exit_code == 0
    assert "paused" in invoke("schedule", "list").stdout
    assert invoke("schedule", "resume", "nightly").exit_code == 0
    assert invoke("schedule", "delete", "nightly").exit_code == 0
    assert "No schedules" in invoke("schedule", "list").stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cron", "0 3 * *"], "is not a cron or rate expression"),
        (["--cron", "0 3 * * 1", "--timezone", "Berlin"], "Unknown time zone"),
        (["--cron", "0 3 * * 1", "--promote-if", "val_acc:up"], "METRIC:max"),
        (["--cron", "0 3 * * 1", "--set", "nope=1"], "nope"),
    ],
)
def test_cli_bad_input_is_one_line(dl_home, args, says):
    result = invoke("schedule", "create", "s1", "--job", "mnist", "--local", *args)
    assert result.exit_code != 0
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "No schedules" in invoke("schedule", "list").stdout


@pytest.mark.train
def test_cloud_only_options_and_cross_target_pointers_are_refused(dl_home):
    result = invoke("schedule", "create", "s3", "--job", "mnist", "--cron", "rate(1 day)", "--local", "--window", "5")
    assert result.exit_code != 0 and "--retries and --window are for cloud schedules" in result.stderr
    assert invoke("schedule", "create", "s4", "--job", "mnist", "--cron", "rate(1 day)", "--local").exit_code == 0
    result = invoke("schedule", "create", "s5", "--job", "mnist", "--cron", "rate(1 day)", "--target", "sagemaker",
                    "--from", "s4:best")  # fmt: skip
    assert result.exit_code != 0 and "Schedule s4 runs on local" in result.stderr


def test_names_are_checked(dl_home):
    result = invoke("schedule", "create", "a-very-long-schedule-name-x", "--job", "mnist", "--cron", "rate(1 day)")
    assert result.exit_code != 0 and "the limit is 26" in result.stderr
    assert invoke("schedule", "show", "nope").stderr.startswith("Error: No schedule 'nope'.")


@pytest.mark.train
def test_update_repackages_and_shows_the_diff(dl_home, tmp_path):
    import shutil

    job = tmp_path / "myjob"
    shutil.copytree(MNIST, job, ignore=shutil.ignore_patterns("__pycache__"))
    assert invoke("schedule", "create", "s2", "--job", str(job), "--cron", "rate(1 day)", "--local").exit_code == 0
    assert "unchanged" in invoke("schedule", "update", "s2").stdout
    (job / "notes.txt").write_text("new file\n")
    (job / "model.py").write_text((job / "model.py").read_text() + "\n# changed\n")
    out = invoke("schedule", "update", "s2").stdout
    assert "+ notes.txt" in out and "M model.py" in out
    assert open_store().get_schedule("s2").spec["files"]["notes.txt"]


def test_install_prints_a_unit_and_a_crontab_line(dl_home, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    out = invoke("schedule", "install").stdout
    assert "ExecStart=" in out and "schedule run" in out and f"DL_HOME={dl_home}" in out
    assert "* * * * * " in out and "--once" in out
    assert not (tmp_path / "config").exists()
    assert invoke("schedule", "install", "--write").exit_code == 0
    assert "[Service]" in (tmp_path / "config" / "systemd" / "user" / "dl-scheduler.service").read_text()


@pytest.mark.train
def test_a_real_firing_trains_and_promotes_and_the_next_warm_starts(dl_home):
    created = time.time()
    sets = [v for pair in zip(TINY[::2], TINY[1::2]) for v in pair]
    result = invoke("schedule", "create", "tiny", "--job", "mnist", "--cron", "rate(1 day)", "--local",
                    "--promote-if", "val_acc:max", "--from", "tiny:best", *sets)  # fmt: skip
    assert result.exit_code == 0, result.output

    [first] = scheduling.tick(created + 86400 + 60)
    assert first.action == "started"
    run = api.wait(first.run_id, timeout=180)
    assert run.status is RunStatus.COMPLETED, run.failure_reason
    log = (dl_home / "runs" / run.id / "dl" / "log.txt").read_text()
    assert "holds no checkpoint yet; training from scratch" in log

    [second] = scheduling.tick(created + 2 * 86400 + 60)  # reviews the first run, then fires
    promoted = open_store().get(first.run_id).promotion
    assert promoted["promoted"] is True and promoted["value"] == run.metrics["val_acc"]
    assert (dl_home / "schedules" / "tiny" / "best" / "best.ckpt").is_file()
    assert open_store().get_schedule("tiny").best_run == first.run_id

    again = api.wait(second.run_id, timeout=180)
    assert again.status is RunStatus.COMPLETED, again.failure_reason
    assert "dl: warm start from best.ckpt" in (dl_home / "runs" / again.id / "dl" / "log.txt").read_text()
    shown = invoke("schedule", "show", "tiny").stdout
    assert first.run_id in shown and second.run_id in shown and "promoted" in shown
    as_json = json.loads(invoke("schedule", "show", "tiny", "--json").stdout)
    best = second.run_id if open_store().get(second.run_id).promotion["promoted"] else first.run_id
    assert as_json["best_run"] == best and as_json["promote_metric"] == "val_acc"
    assert [f["decision"] for f in as_json["firings"]] == ["started", "started"]
    by_id = {r["id"]: r for r in as_json["runs"]}
    assert by_id[first.run_id]["promotion"]["promoted"] is True and by_id[first.run_id]["schedule"] == "tiny"
    assert open_store().get(second.run_id).promotion  # decided too (promoted or not)


@pytest.mark.train
@pytest.mark.parametrize(
    ("mode", "values", "promoted"),
    [
        ("max", [0.5, 0.4, 0.6, 0.6], [True, False, True, False]),
        ("min", [0.5, 0.4, 0.6, 0.4], [True, True, False, False]),
    ],
)
def test_promotion_moves_best_only_on_improvement(dl_home, tmp_path, mode, values, promoted):
    created = MONDAY_3AM - 86400
    scheduling.create("promo", str(MNIST), expression="rate(1 day)", target="local", promote=f"val_loss:{mode}",
                      now=created)  # fmt: skip
    store = open_store()
    ids = []
    for i, value in enumerate(values):
        run_id = f"promo-{i}"
        folder = tmp_path / run_id / "checkpoints"
        folder.mkdir(parents=True)
        (folder / "best.ckpt").write_bytes(f"checkpoint {i}".encode())
        store.insert(Run(id=run_id, job="mnist", target="local", status=RunStatus.PENDING, created_at=created + i,
                         schedule="promo", checkpoint_uri=str(folder)))  # fmt: skip
        finish(run_id, val_loss=value)
        scheduling.review(Client(), store.get_schedule("promo"))
        ids.append(run_id)
    decisions = [store.get(run_id).promotion for run_id in ids]
    assert [d["promoted"] for d in decisions] == promoted
    assert decisions[1]["best_value"] == values[0] and decisions[1]["reason"]
    winner = max(i for i, p in enumerate(promoted) if p)
    assert store.get_schedule("promo").best_run == ids[winner]
    pointer = dl_home / "schedules" / "promo" / "best" / "best.ckpt"
    assert pointer.read_bytes() == f"checkpoint {winner}".encode()


@pytest.mark.train
def test_failed_runs_and_runs_without_the_metric_are_not_promoted(dl_home):
    scheduling.create("promo", str(MNIST), expression="rate(1 day)", target="local", promote="val_acc:max")
    store = open_store()
    for run_id, status, metrics in (
        ("p-failed", RunStatus.FAILED, {"val_acc": 0.9}),
        ("p-none", RunStatus.COMPLETED, {}),
    ):
        store.insert(Run(id=run_id, job="mnist", target="local", status=RunStatus.PENDING, created_at=time.time(),
                         schedule="promo"))  # fmt: skip
        store.mark_finished(run_id, status, metrics=metrics)
    scheduling.review(Client(), store.get_schedule("promo"))
    assert store.get("p-failed").promotion == {
        **store.get("p-failed").promotion,
        "promoted": False,
        "reason": "run Failed",
    }
    assert store.get("p-none").promotion["reason"] == "no val_acc"
    assert store.get_schedule("promo").best_run is None
