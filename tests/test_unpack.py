"""`dl pull`'s unpacking of model.tar.gz (orchestrator/unpack.py), against real tarballs in moto's S3.

A file-size limit (RLIMIT_FSIZE, set in the pulling process only) stands in for a disk that fills
up halfway through a member: the write fails exactly as on a full disk (EFBIG instead of ENOSPC).
The archive itself stays under the limit, so only the unpacking hits it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from orchestrator import unpack
from tests.conftest import BUCKET, REPO, invoke
from tests.test_transfer import MODEL_KEY, RUN_ID, cloud_run, small_checkpoints

MiB = 1024 * 1024


@pytest.fixture
def s3(aws, moto_endpoint):
    return aws.client("s3", endpoint_url=moto_endpoint)


def tarball(members: dict[str, bytes], level: int = 1) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=level) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def half_compressible(size: int, seed: int = 5) -> bytes:
    """Random bytes over 16 symbols: gzip halves them, no more (a model's weights do not shrink much)."""
    table = bytes(b"0123456789abcdef"[i % 16] for i in range(256))
    return random.Random(seed).randbytes(size).translate(table)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_run(s3, members: dict[str, bytes] | None = None, archive: bytes | None = None) -> None:
    """A finished SageMaker run RUN_ID whose model.tar.gz holds ``members`` (or is ``archive``)."""
    cloud_run(s3, small_checkpoints(2), model=False)
    s3.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=archive if archive is not None else tarball(members))


def dl_pull(dest: Path, limit: int | None = None) -> subprocess.CompletedProcess:
    """`dl pull RUN --to dest` in its own process, under a file-size limit of ``limit`` bytes."""

    def limited() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    dl = Path(sys.executable).parent / "dl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [str(dl), "pull", RUN_ID, "--to", str(dest)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=limited,
        timeout=120,
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.dlunpack"))


def test_a_member_the_disk_could_not_take_is_unpacked_whole_by_the_next_pull(s3, tmp_path):
    weights = half_compressible(24 * MiB)
    model_run(s3, {"model.ckpt": weights, "dl_model.json": b'{"job": "mnist"}'})
    dest = tmp_path / "pulled"

    # The archive (~14 MiB) fits under the limit; its 24 MiB member does not.
    full = dl_pull(dest, limit=18 * MiB)

    assert full.returncode == 1, full.stdout + full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in full.stderr, full.stderr
    assert lines[0].startswith("Error: Cannot write") and "File too large" in lines[0], lines[0]
    assert "Free some disk space" in lines[0]
    assert (dest / "model" / "model.tar.gz").is_file()  # the download itself finished
    assert not (dest / "model" / "model.ckpt").exists()  # never a shortened member under its name
    assert leftovers(dest) == []

    again = invoke("pull", RUN_ID, "--to", str(dest))

    assert again.exit_code == 0, again.output
    assert sha256((dest / "model" / "model.ckpt").read_bytes()) == sha256(weights)
    assert str(dest / "model" / "model.ckpt") in again.stdout
    recorded = json.loads(unpack.manifest_path(dest / "model" / "model.tar.gz").read_text())["members"]
    assert recorded["model.ckpt"]["sha256"] == sha256(weights)
    assert recorded["model.ckpt"]["size"] == len(weights)
    assert leftovers(dest) == []


def test_a_member_cut_short_after_the_pull_is_unpacked_again_and_the_pull_says_so(s3, tmp_path):
    weights = half_compressible(2 * MiB)
    model_run(s3, {"model.ckpt": weights, "dl_model.json": b'{"job": "mnist"}'})
    dest = tmp_path / "pulled"
    assert invoke("pull", RUN_ID, "--to", str(dest)).exit_code == 0
    member = dest / "model" / "model.ckpt"
    with open(member, "r+b") as handle:  # what an unpack that died halfway left before
        handle.truncate(MiB)

    again = invoke("pull", RUN_ID, "--to", str(dest))

    assert again.exit_code == 0, again.output
    assert f"Unpacked model.ckpt again: it had {MiB} of its {len(weights)} bytes." in again.stdout, again.stdout
    assert sha256(member.read_bytes()) == sha256(weights)
    third = invoke("pull", RUN_ID, "--to", str(dest))
    assert "again" not in third.stdout and "already here and unchanged" in third.stdout, third.stdout


def test_a_member_without_a_record_of_a_whole_unpack_is_unpacked_again(s3, tmp_path):
    """A pull by an older dl (no manifest) that died while unpacking left a shortened member."""
    weights = half_compressible(2 * MiB)
    model_run(s3, {"model.ckpt": weights})
    dest = tmp_path / "pulled"
    assert invoke("pull", RUN_ID, "--to", str(dest)).exit_code == 0
    unpack.manifest_path(dest / "model" / "model.tar.gz").unlink()
    (dest / "model" / "model.ckpt").write_bytes(weights[: 100 * 1024])

    again = invoke("pull", RUN_ID, "--to", str(dest))

    assert "Unpacked model.ckpt again: it was never recorded as unpacked whole." in again.stdout, again.stdout
    assert sha256((dest / "model" / "model.ckpt").read_bytes()) == sha256(weights)


def test_a_gzip_bomb_is_refused_and_nothing_is_unpacked(s3, tmp_path):
    zeros = bytes(100 * MiB)
    archive = tarball({"weights.bin": zeros}, level=9)
    assert len(archive) < MiB  # 100 MiB of zeros pack into ~100 KB
    model_run(s3, archive=archive)
    dest = tmp_path / "pulled"

    result = invoke("pull", RUN_ID, "--to", str(dest))

    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert "would unpack to 100.0 MB" in line and "gzip bomb" in line, line
    assert f"tar -xzf {dest / 'model' / 'model.tar.gz'}" in line
    assert sorted(p.name for p in (dest / "model").iterdir()) == ["model.tar.gz"]


def sparse_tarball(name: str, size: int) -> bytes:
    """A tar.gz with one GNU sparse member of ``size`` bytes, all a hole but its last 512: what
    `tar -S` writes for a huge, mostly empty file, a few hundred bytes however large it is."""
    info = tarfile.TarInfo(name)
    info.size = 512  # the bytes stored: one block of data
    info.type = tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[386:398] = tarfile.itn(size - 512, 12, tarfile.GNU_FORMAT)  # the data's offset in the file
    header[398:410] = tarfile.itn(512, 12, tarfile.GNU_FORMAT)  # and its length
    header[483:495] = tarfile.itn(size, 12, tarfile.GNU_FORMAT)  # the file's real size
    header[148:156] = b" " * 8
    header[148:155] = b"%06o\0" % sum(header)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:  # for the end-of-archive blocks
        tar.fileobj.write(bytes(header) + b"w" * 512)
        tar.offset += 1024
    with tarfile.open(fileobj=io.BytesIO(raw.getvalue()), mode="r:gz") as check:
        assert [(m.name, m.size) for m in check.getmembers()] == [(name, size)]
    return raw.getvalue()


def test_members_larger_than_the_free_disk_are_refused_before_anything_is_written(s3, tmp_path):
    free = shutil.disk_usage(tmp_path).free
    model_run(s3, archive=sparse_tarball("model.ckpt", free + 1024**3))
    dest = tmp_path / "pulled"

    # The limit only keeps a dl that would try anyway from filling this disk.
    result = dl_pull(dest, limit=64 * MiB)

    assert result.returncode == 1, result.stdout + result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert "needs " in line and " free." in line and "Free some disk space, or pull --to" in line, line
    assert sorted(p.name for p in (dest / "model").iterdir()) == ["model.tar.gz"]


def test_unsafe_members_of_a_pulled_archive_are_still_refused(s3, tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        ok = tarfile.TarInfo("model.ckpt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        evil = tarfile.TarInfo("../../escaped.txt")
        evil.size = 5
        tar.addfile(evil, io.BytesIO(b"pwned"))
    model_run(s3, archive=raw.getvalue())
    dest = tmp_path / "box" / "pulled"

    result = invoke("pull", RUN_ID, "--to", str(dest))

    assert result.exit_code == 1 and "unsafe entry '../../escaped.txt'" in result.stderr, result.output
    assert sorted(p.name for p in (dest / "model").iterdir()) == ["model.tar.gz"]
    assert not (tmp_path / "escaped.txt").exists()


def test_a_member_that_would_replace_the_archive_is_refused(s3, tmp_path):
    archive = tarball({"model.ckpt": b"ok", "model.tar.gz": b"not the archive"})
    model_run(s3, archive=archive)
    dest = tmp_path / "pulled"

    result = invoke("pull", RUN_ID, "--to", str(dest))

    assert result.exit_code == 1 and "unsafe entry 'model.tar.gz'" in result.stderr, result.output
    assert (dest / "model" / "model.tar.gz").read_bytes() == archive
