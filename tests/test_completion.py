"""Shell completion, through the real protocol: the `dl` script run as bash runs it, with
COMP_WORDS, COMP_CWORD and _DL_COMPLETE=complete_bash, against a real DL_HOME holding runs."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.store import _MIGRATIONS, Run, RunStatus, Schedule, Store
from tests.conftest import REPO

DL = Path(sys.executable).parent / "dl"
NOW = time.time()
RUNS = [  # (id, status, minutes ago)
    ("mnist-20261125-1200-aaaa", RunStatus.COMPLETED, 300),
    ("mnist-20261125-1300-bbbb", RunStatus.FAILED, 240),
    ("playground-20261125-1400-cccc", RunStatus.STOPPED, 180),
    ("mnist-20261125-1500-dddd", RunStatus.IN_PROGRESS, 120),
    ("playground-20261125-1600-eeee", RunStatus.PENDING, 60),
]
NEWEST_FIRST = [run_id for run_id, *_ in reversed(RUNS)]


def complete(line: str, env: dict[str, str] | None = None, shell: str = "bash") -> list[str]:
    """What `dl` offers for the last word of ``line`` (an empty one after a trailing space)."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    extra = {"COMP_WORDS": line, "COMP_CWORD": str(cword)} if shell == "bash" else {"_TYPER_COMPLETE_ARGS": line}
    proc = subprocess.run(
        [str(DL)], env={**os.environ, **(env or {}), **extra, "_DL_COMPLETE": f"complete_{shell}"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == "", (proc.returncode, proc.stderr)
    return [word for word in proc.stdout.splitlines() if word]  # nothing to offer: one empty line


@pytest.fixture
def home(dl_home, monkeypatch, tmp_path) -> Path:
    """A DL_HOME with five runs (two still live, two of a sweep) and two schedules, closed."""
    monkeypatch.chdir(tmp_path)  # no trainjobs/ folder above: only the bundled jobs
    store = Store(dl_home)
    for run_id, status, minutes in RUNS:
        sweep = "playground-sweep-20261125-1400-ffff" if run_id.startswith("playground") else None
        store.insert(Run(id=run_id, job=run_id.split("-")[0], target="local", status=status,
                         created_at=NOW - 60 * minutes, sweep=sweep))  # fmt: skip
    for name in ("weekly", "nightly"):
        store.insert_schedule(Schedule(name, "mnist", "local", "rate(1 day)", "0" * 64, NOW, status="active"))
    store.close()
    return dl_home


def test_commands_and_options_complete(dl_home):
    assert {"launch", "runs", "show", "pull", "schedule", "compare"} <= set(complete("dl "))
    assert complete("dl sh") == ["show"]
    assert complete("dl launch --fro") == ["--from", "--from-optimizer"]
    assert complete("dl schedule pa") == ["pause"]
    assert not dl_home.exists(), "completing created DL_HOME"


def test_job_names_come_from_the_search_path_without_importing_job_code(home, tmp_path):
    bundled = sorted(p.name for p in (REPO / "trainjobs").iterdir() if (p / "job.toml").is_file())
    assert sorted(complete("dl launch ")) == bundled
    assert complete("dl launch pl") == ["playground"]
    assert complete("dl jobs mn") == ["mnist"]
    assert complete("dl sweep play") == ["playground"]
    assert complete("dl runs --job mn") == ["mnist"]
    assert complete("dl schedule create weekly --job mn") == ["mnist"]
    assert complete("dl launch ./") == [] and complete("dl launch ~/") == []  # paths: the shell's own

    mine = tmp_path / "my-jobs" / "exploding"
    mine.mkdir(parents=True)
    (mine / "job.toml").write_text(
        '[job]\nmodel = "model:Net"\ndatamodule = "model:Data"\n[params.lr]\ntype = "float"\ndefault = 0.1\n'
    )
    marker = tmp_path / "job-code-ran"
    (mine / "model.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(3)\n")
    broken = tmp_path / "my-jobs" / "broken"
    broken.mkdir()
    (broken / "job.toml").write_text("this is [not toml")
    assert complete("dl launch ex", {"DL_JOBS_PATH": str(tmp_path / "my-jobs")}) == ["exploding"]
    assert not marker.exists(), "completion imported the job's code"


def test_run_ids_newest_first_for_every_run_argument(home):
    for command in ("show", "logs", "resume", "pull", "plot", "compare"):
        assert complete(f"dl {command} ") == NEWEST_FIRST, command
    assert complete("dl show mnist-20261125-1") == [r for r in NEWEST_FIRST if r.startswith("mnist")]
    assert complete("dl show playground-20261125-16") == ["playground-20261125-1600-eeee"]
    assert complete("dl show nothing-like-it") == []
    assert complete("dl launch mnist --from mnist-20261125-12") == ["mnist-20261125-1200-aaaa"]


def test_stop_offers_only_live_runs_and_compare_skips_those_given(home):
    assert complete("dl stop ") == ["playground-20261125-1600-eeee", "mnist-20261125-1500-dddd"]
    given = NEWEST_FIRST[:2]
    assert complete(f"dl compare {' '.join(given)} ") == NEWEST_FIRST[2:]
    older_mnist = ["mnist-20261125-1500-dddd", "mnist-20261125-1300-bbbb"]
    assert complete("dl plot mnist-20261125-1200-aaaa mnist") == older_mnist


def test_schedule_names_and_sweep_ids(home):
    for command in ("show", "pause", "resume", "delete", "update"):
        assert complete(f"dl schedule {command} ") == ["nightly", "weekly"], command
    assert complete("dl schedule show w") == ["weekly"]
    assert complete("dl compare --sweep ") == ["playground-sweep-20261125-1400-ffff"]


def test_zsh_gets_each_run_with_its_job_and_status(home):
    out = "\n".join(complete("dl stop ", shell="zsh"))
    assert "mnist-20261125-1500-dddd" in out and "mnist InProgress" in out
    assert "mnist-20261125-1200-aaaa" not in out


def test_the_database_is_only_read(home):
    db = home / "dl.db"
    before = db.read_bytes()
    with sqlite3.connect(db) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    assert complete("dl show ") == NEWEST_FIRST
    assert db.read_bytes() == before
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == version


def test_an_older_database_completes_what_it_has_and_is_not_migrated(dl_home):
    dl_home.mkdir(parents=True)
    db = dl_home / "dl.db"
    with sqlite3.connect(db) as conn:  # schema 1: runs only, no schedules yet
        conn.executescript(_MIGRATIONS[0])
        conn.execute("INSERT INTO runs (id, job, target, status, created_at) VALUES ('mnist-old', 'mnist', 'local', "
                     "'Completed', 1.0)")  # fmt: skip
        conn.execute("PRAGMA user_version = 1")
    before = db.read_bytes()
    assert complete("dl show ") == ["mnist-old"]
    assert complete("dl schedule pause ") == []
    assert complete("dl compare --sweep ") == []
    assert db.read_bytes() == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'schedules'").fetchall() == []


def test_nothing_to_read_completes_nothing_and_never_a_traceback(dl_home, tmp_path):
    assert complete("dl show ") == [] and complete("dl schedule show ") == []
    assert not dl_home.exists(), "completing created DL_HOME"
    dl_home.mkdir(parents=True)
    (dl_home / "dl.db").write_bytes(b"this is not sqlite" * 100)
    assert complete("dl show ") == [] and complete("dl stop ") == []  # complete() checks stderr is empty
    assert complete("dl launch ", {"DL_JOBS_PATH": str(tmp_path / "no-such-folder")})  # the bundled jobs still
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    assert complete("dl show ", {"DL_HOME": str(not_a_folder / "home")}) == []


def test_completing_a_run_id_imports_nothing_heavy(home):
    code = (
        "import json, sys\n"
        "from orchestrator.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = {'boto3', 'botocore', 'torch', 'lightning', 'numpy', 'orchestrator.api'}\n"
        "print(json.dumps(sorted(heavy & set(sys.modules))))\n"
    )
    env = {**os.environ, "COMP_WORDS": "dl show ", "COMP_CWORD": "2", "_DL_COMPLETE": "complete_bash"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:-1] == NEWEST_FIRST and json.loads(lines[-1]) == []


def from_bash(command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``command`` run by bash as a user types it. Typer finds the shell to complete for by looking at
    the processes above dl (shellingham), so bash must be dl's parent (``; true``: bash then forks
    rather than execs), whatever shell started the tests."""
    return subprocess.run(["bash", "--norc", "-c", f"{command}; true"], env=env, capture_output=True, text=True)


def test_install_and_show_completion_for_bash_complete_in_a_real_bash(home, tmp_path):
    fake_home = tmp_path / "user"
    env = {**os.environ, "HOME": str(fake_home), "PATH": f"{DL.parent}{os.pathsep}{os.environ['PATH']}"}
    shown = from_bash("dl --show-completion bash", env)
    assert "_DL_COMPLETE=complete_bash" in shown.stdout, shown.stderr
    installed = from_bash("dl --install-completion bash", env)
    assert "bash completion installed" in installed.stdout, installed.stderr
    script = fake_home / ".bash_completions" / "dl.sh"
    assert script.read_text().strip() == shown.stdout.strip()
    assert f"source '{script}'" in (fake_home / ".bashrc").read_text()
    # bash itself runs the installed function for `dl stop <TAB>`.
    probe = f"source {script}; COMP_WORDS=(dl stop ''); COMP_CWORD=2; _dl_completion dl; echo ${{COMPREPLY[@]}}"
    out = subprocess.run(["bash", "--norc", "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["playground-20261125-1600-eeee", "mnist-20261125-1500-dddd"]
