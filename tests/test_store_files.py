"""What is on disk once dl's processes end: dl.db alone holds every committed run (issue 17).

SQLite in WAL mode keeps commits in dl.db-wal until a checkpoint copies them into dl.db; the last
connection to close does that and deletes the WAL. dl used to close none, so after two runs dl.db
was 4 KB without tables and deleting dl.db-wal (or moving dl.db aside, as a hint once said) lost
every run. These tests start real processes (`dl launch`, the local supervisor) and then read
dl.db with the WAL deleted.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from orchestrator.backends.local import process
from orchestrator.errors import StoreError
from orchestrator.store import Store
from tests.conftest import MNIST, REPO, TINY, launched_id, wait_for


def _dl(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def _rows(path) -> list[tuple]:
    raw = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return raw.execute("SELECT id, status FROM runs ORDER BY id").fetchall()
    finally:
        raw.close()


@pytest.mark.train
def test_after_two_runs_and_every_process_ending_dl_db_alone_holds_every_run(dl_home):
    ids = []
    for _ in range(2):
        launched = _dl("launch", str(MNIST), "--local", *TINY)
        assert launched.returncode == 0, launched.stderr
        ids.append(launched_id(launched.stdout))
    for run_id in ids:
        waited = _dl("logs", run_id, "--follow")  # returns when the run has ended
        assert waited.returncode == 0, waited.stderr
    with Store(dl_home) as store:
        supervisors = [(r.backend_state["pid"], r.backend_state.get("pid_created")) for r in map(store.get, ids)]
        assert [store.get(i).status.value for i in ids] == ["Completed", "Completed"]
    for pid, created in supervisors:
        wait_for(lambda pid=pid, created=created: not process.alive(pid, created), what=f"supervisor {pid} to exit")

    wal = dl_home / "dl.db-wal"
    if wal.exists():  # SQLite deletes it when the last connection closes; a leftover must be empty
        assert wal.stat().st_size == 0
        wal.unlink()
    assert _rows(dl_home / "dl.db") == sorted((i, "Completed") for i in ids)


def test_closing_the_last_connection_leaves_nothing_in_the_wal(tmp_path):
    from orchestrator.store import Run, RunStatus

    writer, reader = Store(tmp_path), Store(tmp_path)
    writer.insert(Run(id="r1", job="mnist", target="local", status=RunStatus.PENDING, created_at=1.0))
    writer.close()  # the reader still has it open: the WAL may stay until the last one closes
    assert reader.get("r1").id == "r1"
    reader.close()

    assert not (tmp_path / "dl.db-wal").exists() or (tmp_path / "dl.db-wal").stat().st_size == 0
    (tmp_path / "dl.db-wal").unlink(missing_ok=True)
    assert _rows(tmp_path / "dl.db") == [("r1", "Pending")]


def test_an_unreadable_database_is_never_to_be_moved_aside_while_in_use(tmp_path):
    (tmp_path / "dl.db").write_bytes(b"not sqlite" * 500)

    with pytest.raises(StoreError, match="cannot be opened") as info:
        Store(tmp_path)

    assert "Move it aside" not in info.value.hint  # processes holding it would write to a moved file
    assert "dl store rebuild" in info.value.hint
