"""A local run's status tells the truth whatever is killed, and when: only the supervisor, `dl
launch` right after the row is written, Ctrl-C as the supervisor starts, a stop right after the
last epoch. Real processes (`dl` as a subprocess where it is the one killed), real SQLite, tiny
real training. Faults land at exact points through DL_TEST_FAULT (orchestrator/faults.py): a
`pause` is a barrier file the test waits for and removes, never a sleep."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from orchestrator.backends.local import process
from tests.conftest import MNIST, REPO, TINY, invoke, launched_id, runs_json, wait_for

pytestmark = pytest.mark.train  # every test here launches a local run of mnist


def _dl(*args: str, fault: str | None = None, faults: Path | None = None) -> subprocess.CompletedProcess:
    """`dl ARGS` as its own process (so that it can be killed), with this checkout's code."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if fault:
        env.update(DL_TEST_FAULT=fault, DL_TEST_FAULT_DIR=str(faults))
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _show(run_id: str) -> dict:
    result = invoke("show", run_id, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _log(run_id: str) -> str:
    return Path(_show(run_id)["logs"]).read_text()


def _barrier(faults: Path, point: str) -> Path:
    path = faults / point
    return wait_for(lambda: path.is_file() and path, what=f"the fault point {point}")


def _gone(pid: int, created: float) -> bool:
    return not process.alive(pid, created)


def _finished(run_id: str) -> dict:
    return wait_for(lambda: (r := _show(run_id))["terminal"] and r, what=f"run {run_id} to end")


def test_killing_only_the_supervisor_leaves_the_run_to_its_trainer(dl_home, tmp_path):
    faults = tmp_path / "faults"
    faults.mkdir()
    run_id = launched_id(_dl("launch", "mnist", *TINY, fault="after-fit:pause", faults=faults).stdout)
    barrier = _barrier(faults, "after-fit")  # the trainer has trained and waits before writing the model
    state = _show_state(run_id)
    os.kill(state["pid"], signal.SIGKILL)
    wait_for(lambda: _gone(state["pid"], state.get("pid_created")), what="the supervisor to die")

    assert _show(run_id)["status"] == "InProgress"  # its trainer lives and holds the run folder
    refused = invoke("resume", run_id)
    assert refused.exit_code == 2 and "still InProgress" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    barrier.unlink()
    run = _finished(run_id)
    assert run["status"] == "Completed" and run["failure_reason"] is None
    assert run["metrics"]["val_acc"] > 0
    assert (Path(run["model"]) / "model.ckpt").is_file()
    assert _log(run_id).count("dl: run ") == 1  # one supervisor started it; no second trainer ever ran


def test_stop_reaches_the_trainer_when_its_supervisor_is_gone(dl_home):
    run_id = launched_id(invoke("launch", "mnist", "--set", "max_epochs=100000").stdout)
    wait_for(lambda: "epoch 1/" in _log(run_id), what="one epoch")
    state = _show_state(run_id)
    os.kill(state["pid"], signal.SIGKILL)
    wait_for(lambda: _gone(state["pid"], state.get("pid_created")), what="the supervisor to die")
    assert _show(run_id)["status"] == "InProgress"

    stopped = invoke("stop", run_id, "--grace", "60")
    assert stopped.exit_code == 0, stopped.output
    assert f"{run_id} Stopped" in stopped.stdout
    assert _gone(state["trainer_pid"], state["trainer_created"])
    run = _show(run_id)
    assert run["status"] == "Stopped" and run["failure_reason"] is None
    assert "dl: stop requested; saved last.ckpt" in _log(run_id)


def test_ctrl_c_as_the_supervisor_starts_leaves_the_run_to_it(dl_home, tmp_path):
    launched = _dl("launch", "mnist", *TINY, fault="supervisor-started:interrupt", faults=tmp_path)
    assert launched.returncode == 130, launched.stderr
    [listed] = runs_json()
    run = _finished(listed["id"])
    assert run["status"] == "Completed" and run["failure_reason"] is None


def test_a_launch_killed_after_the_row_is_written_is_settled_on_the_next_look(dl_home, tmp_path):
    launched = _dl("launch", "mnist", *TINY, fault="after-insert:kill", faults=tmp_path)
    assert launched.returncode == -signal.SIGKILL
    [listed] = runs_json()  # the next look settles it: never Pending for good
    assert listed["status"] == "Failed"
    assert listed["failure_reason"] == "The launch ended before the run's supervisor started, so nothing ran."

    stopped = invoke("stop", listed["id"])
    assert stopped.exit_code == 0
    assert f"already ended (Failed: {listed['failure_reason']}); nothing to stop." in stopped.stdout
    resumed = invoke("resume", listed["id"])
    assert resumed.exit_code == 2 and "KeyError" not in resumed.output
    assert f"Run {listed['id']} never started" in resumed.stderr and "dl launch" in resumed.stderr
    assert len(resumed.stderr.strip().splitlines()) == 1


def test_a_stop_right_after_the_last_epoch_leaves_the_run_completed(dl_home, tmp_path):
    faults = tmp_path / "faults"
    faults.mkdir()
    run_id = launched_id(_dl("launch", "mnist", *TINY, fault="after-fit:pause", faults=faults).stdout)
    barrier = _barrier(faults, "after-fit")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    stopper = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "stop", run_id, "--grace", "60"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: "dl: stop requested after training finished" in _log(run_id), what="the stop to arrive")
    barrier.unlink()
    out, _ = stopper.communicate(timeout=120)
    assert stopper.returncode == 0
    assert f"{run_id} Completed: its training had finished before the stop took effect." in out
    run = _show(run_id)
    assert run["status"] == "Completed" and run["metrics"]["val_acc"] > 0
    assert (Path(run["model"]) / "model.ckpt").is_file()


def test_resuming_a_run_that_reached_max_epochs_keeps_its_final_metrics(dl_home, tmp_path):
    faults = tmp_path / "faults"
    faults.mkdir()
    run_id = launched_id(_dl("launch", "mnist", *TINY, fault="after-fit:pause", faults=faults).stdout)
    barrier = _barrier(faults, "after-fit")  # every epoch done, the model not yet written
    os.killpg(_show_state(run_id)["pgid"], signal.SIGKILL)
    barrier.unlink()
    killed = _finished(run_id)
    assert killed["status"] == "Failed" and "ended without recording an outcome" in killed["failure_reason"]
    import csv

    with open(Path(killed["output"]) / "data" / "metrics.csv", newline="") as handle:
        last = list(csv.DictReader(handle))[-1]
    expected = {k: float(v) for k, v in last.items() if k not in ("epoch", "step") and v}
    assert "val_acc" in expected

    resumed = invoke("resume", run_id, "--follow")
    assert resumed.exit_code == 0, resumed.output
    assert "dl: training had already reached max_epochs" in _log(run_id)
    run = _show(run_id)
    assert run["status"] == "Completed"
    assert run["metrics"] == expected
    described = json.loads((Path(run["model"]) / "dl_model.json").read_text())
    assert described["metrics"] == expected


def test_a_launch_never_uses_a_run_folder_it_did_not_create(dl_home, tmp_path):
    old = launched_id(invoke("launch", "mnist", *TINY, "--name", "old-run", "--follow").stdout)
    folder = dl_home / "runs" / old
    code_before = {p.name: p.read_bytes() for p in (folder / "code").iterdir() if p.is_file()}
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in ("dl.db", "dl.db-wal", "dl.db-shm"):
        if (dl_home / name).exists():
            shutil.move(dl_home / name, aside / name)
    newjob = tmp_path / "jobs" / "newjob"
    shutil.copytree(MNIST, newjob, ignore=shutil.ignore_patterns("__pycache__"))
    (newjob / "model.py").write_text((newjob / "model.py").read_text() + "\n# the new job's code\n")

    launched = invoke("launch", str(newjob), *TINY, "--name", "old-run")
    assert launched.exit_code == 2
    assert f"The run folder {folder} already exists" in launched.stderr
    assert runs_json() == []  # nothing recorded under the old run's name
    assert {p.name: p.read_bytes() for p in (folder / "code").iterdir() if p.is_file()} == code_before


def test_process_identity_and_the_trainer_lock(tmp_path):
    """process.py on real processes: identity by creation time (a reused pid is another process),
    a zombie is dead, and the trainer lock is seen held exactly while a process holds it."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, start_new_session=True
    )
    created = process.start_time(child.pid)
    assert created == psutil.Process(child.pid).create_time()
    assert process.alive(child.pid, created)
    assert not process.alive(child.pid, created - 10)  # the same pid, another process's identity
    process.kill_group(child.pid)
    wait_for(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, what="a zombie")
    assert not process.alive(child.pid, created)  # dead though not yet reaped
    child.wait()
    assert process.start_time(child.pid) is None and not process.alive(child.pid, created)

    lock = tmp_path / "dl" / "trainer.lock"
    assert not process.lock_held(lock)  # no file yet
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(REPO), str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "held\n"
    assert process.lock_held(lock)
    assert process.hold_lock(lock, attempts=1) is None
    holder.stdin.close()
    holder.wait(timeout=30)
    assert not process.lock_held(lock)
    fd = process.hold_lock(lock, attempts=1)
    assert fd is not None
    os.close(fd)


_HOLD = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from orchestrator.backends.local import process
fd = process.hold_lock(Path(sys.argv[2]))
print("held" if fd is not None else "refused", flush=True)
sys.stdin.read()
"""


def _show_state(run_id: str) -> dict:
    from orchestrator import api

    return api.show(run_id).backend_state
