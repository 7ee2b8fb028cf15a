"""orchestrator/fsutil.py: a file is replaced whole or not at all, keeping its mode."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from orchestrator.fsutil import atomic_write, replacing
from tests.conftest import REPO


def test_atomic_write_replaces_the_file_keeps_its_mode_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "dl.toml"
    atomic_write(target, "a = 1\r\n")  # the folder is created; newlines are written as given
    assert target.read_bytes() == b"a = 1\r\n"
    target.chmod(0o600)

    atomic_write(target, b"a = 2\n")

    assert target.read_bytes() == b"a = 2\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["dl.toml"]


def test_a_write_that_raises_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("old")
    with pytest.raises(ValueError), replacing(target) as tmp:
        tmp.write_text("half of the new")
        raise ValueError("the writer failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_named_temp_file_is_used_and_renamed(tmp_path):
    target = tmp_path / "best.ckpt"
    named = tmp_path / ".best.ckpt.part"
    with replacing(target, tmp=named, fsync=False) as tmp:
        assert tmp == named
        tmp.write_bytes(b"weights")
    assert target.read_bytes() == b"weights" and not named.exists()


def test_a_process_killed_while_writing_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "dl.toml"
    target.write_text("old = true\n")
    code = (
        "import os, signal, sys; from pathlib import Path; from orchestrator.fsutil import replacing\n"
        "with replacing(Path(sys.argv[1])) as tmp, open(tmp, 'w') as out:\n"
        "    out.write('new = '); out.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-c", code, str(target)], env=env, timeout=60)
    assert killed.returncode == -9
    assert target.read_text() == "old = true\n"
    [leftover] = [p for p in tmp_path.iterdir() if p.name != "dl.toml"]
    assert leftover.read_text() == "new = " and leftover.name.endswith(".tmp")
