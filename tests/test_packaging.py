"""Packaging: deterministic, content-addressed archives that hold exactly the job and nothing private.

Every test builds a real job folder under tmp_path, packages it with the real code and reads the
resulting tar.gz back with the standard library.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
from importlib.metadata import version
from pathlib import Path

import pytest

from orchestrator.errors import DlError, PackageError
from orchestrator.jobs import load_job
from orchestrator.packaging import build_package, extract_package

RUNTIME_ENTRY = Path(__file__).resolve().parents[1] / "orchestrator" / "runtime" / "dl_entry.py"
FIXED_MTIME = 315532800  # 1980-01-01T00:00:00Z, documented in packaging.py

MINIMAL_TOML = """\
[job]
model = "model:M"
datamodule = "data:D"

[params.lr]
type = "float"
default = 0.1
"""


def write_job(folder: Path, files: dict[str, str | bytes] | None = None, toml: str = MINIMAL_TOML) -> Path:
    """A job folder with job.toml, model.py, data.py and any extra ``files`` (relative path -> content)."""
    all_files: dict[str, str | bytes] = {
        "job.toml": toml,
        "model.py": "class M:\n    pass\n",
        "data.py": "class D:\n    pass\n",
        **(files or {}),
    }
    for rel, content in all_files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return folder


def build(folder: Path, cache: Path, max_mb: float = 100.0):
    return build_package(load_job(folder), cache, max_mb)


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive, "r:gz") as tar:
        handle = tar.extractfile(name)
        assert handle is not None, name
        return handle.read()


def all_member_bytes(archive: Path) -> bytes:
    with tarfile.open(archive, "r:gz") as tar:
        return b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())


def assert_one_line(err: DlError) -> None:
    assert err.message and "\n" not in err.message
    assert "\n" not in err.hint
    assert "\n" not in str(err)


# -- determinism -----------------------------------------------------------------------------------


def test_same_tree_gives_identical_bytes_and_a_content_addressed_path(tmp_path):
    job = write_job(tmp_path / "toy", {"pkg/util.py": "X = 1\n", "requirements.txt": "numpy\n"})

    first = build(job, tmp_path / "cache1")
    second = build(job, tmp_path / "cache2")

    assert first.path == tmp_path / "cache1" / f"{first.sha256}.tar.gz"
    assert second.path == tmp_path / "cache2" / f"{second.sha256}.tar.gz"
    blob = first.path.read_bytes()
    assert blob == second.path.read_bytes()
    assert first.sha256 == second.sha256 == hashlib.sha256(blob).hexdigest()
    assert first.size == len(blob)
    assert first.short_hash == first.sha256[:12]
    assert sorted(p.name for p in (tmp_path / "cache1").iterdir()) == [f"{first.sha256}.tar.gz"]


def test_building_again_into_the_same_cache_keeps_one_file(tmp_path):
    job = write_job(tmp_path / "toy")
    cache = tmp_path / "cache"

    first = build(job, cache)
    second = build(job, cache)

    assert first.path == second.path
    assert [p.name for p in cache.iterdir()] == [first.path.name]  # no temporary files left behind


def test_hash_ignores_location_mtimes_and_non_exec_permissions(tmp_path):
    original = write_job(tmp_path / "a" / "toy", {"pkg/util.py": "X = 1\n", "notes.txt": "hi\n"})
    reference = build(original, tmp_path / "cache")

    moved = tmp_path / "somewhere" / "else" / "toy"  # same folder name: the name is part of dl_job.json
    shutil.copytree(original, moved)
    for path in moved.rglob("*"):
        os.utime(path, (1_000_000_000, 1_234_567_890))
    os.chmod(moved / "notes.txt", 0o600)
    os.chmod(moved / "pkg" / "util.py", 0o664)

    relocated = build(moved, tmp_path / "cache2")

    assert relocated.sha256 == reference.sha256
    assert relocated.path.read_bytes() == reference.path.read_bytes()


def test_one_changed_byte_changes_the_hash(tmp_path):
    job = write_job(tmp_path / "toy", {"notes.txt": "abc\n"})
    before = build(job, tmp_path / "cache")

    (job / "notes.txt").write_text("abd\n")
    after = build(job, tmp_path / "cache")

    assert after.sha256 != before.sha256
    assert before.path.exists() and after.path.exists()
    assert read_member(after.path, "notes.txt") == b"abd\n"


def test_exec_bit_is_kept_and_changes_the_hash(tmp_path):
    job = write_job(tmp_path / "toy", {"run.sh": "#!/bin/sh\necho hi\n"})
    plain = build(job, tmp_path / "cache")
    assert members(plain.path)["run.sh"].mode == 0o644

    os.chmod(job / "run.sh", 0o755)
    executable = build(job, tmp_path / "cache")

    assert executable.sha256 != plain.sha256
    assert members(executable.path)["run.sh"].mode == 0o755
    assert members(executable.path)["model.py"].mode == 0o644


def test_archive_headers_carry_no_machine_details(tmp_path):
    job = write_job(tmp_path / "toy", {"pkg/deep/mod.py": "Y = 2\n", "b.txt": "b", "A.txt": "a"})
    os.utime(job / "b.txt", (2_000_000_000, 2_000_000_000))
    package = build(job, tmp_path / "cache")
    raw = package.path.read_bytes()

    # gzip header: magic, no FNAME flag (no file name embedded), MTIME 0.
    assert raw[:2] == b"\x1f\x8b"
    assert raw[3] == 0
    assert raw[4:8] == b"\x00\x00\x00\x00"

    with tarfile.open(package.path, "r:gz") as tar:
        infos = tar.getmembers()
    names = [m.name for m in infos]
    assert names == sorted(names)
    assert "pkg/deep/mod.py" in names
    for info in infos:
        assert info.isfile(), info.name
        assert info.mtime == FIXED_MTIME, info.name
        assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", ""), info.name
        assert not info.name.startswith("/"), info.name
        assert ".." not in info.name.split("/"), info.name


# -- contents --------------------------------------------------------------------------------------


@pytest.mark.train
def test_package_holds_job_files_runtime_entry_spec_and_requirements(tmp_path):
    job_dir = write_job(
        tmp_path / "toy",
        {"pkg/util.py": "X = 1\n", "requirements.txt": "numpy>=1.24\n# pinned for reasons\nscikit-learn\n"},
    )
    package = build(job_dir, tmp_path / "cache")
    names = set(members(package.path))

    assert names == {
        "job.toml", "model.py", "data.py", "pkg/util.py", "requirements.txt", "dl_entry.py", "dl_job.json",
    }  # fmt: skip
    assert sorted(f.name for f in package.files) == sorted(names)
    sizes = {f.name: f.size for f in package.files}
    assert sizes["pkg/util.py"] == len("X = 1\n")

    assert read_member(package.path, "dl_entry.py") == RUNTIME_ENTRY.read_bytes()
    assert read_member(package.path, "model.py") == (job_dir / "model.py").read_bytes()

    spec = json.loads(read_member(package.path, "dl_job.json"))
    assert spec["name"] == "toy"
    assert spec["model"] == "model:M"
    assert spec["datamodule"] == "data:D"
    assert spec["params"]["lr"]["type"] == "float"
    assert spec["params"]["lr"]["default"] == 0.1
    assert spec["trainer"]["max_epochs"]["default"] == 10

    lines = read_member(package.path, "requirements.txt").decode().splitlines()
    assert f"lightning=={version('lightning')}" in lines
    for own in ("numpy>=1.24", "# pinned for reasons", "scikit-learn"):
        assert own in lines
    assert sum(1 for line in lines if re.match(r"^\s*lightning\b", line, re.I)) == 1


@pytest.mark.train
def test_job_without_requirements_still_gets_lightning(tmp_path):
    package = build(write_job(tmp_path / "toy"), tmp_path / "cache")

    lines = read_member(package.path, "requirements.txt").decode().splitlines()
    assert f"lightning=={version('lightning')}" in lines


@pytest.mark.parametrize("own_line", ["lightning==2.4.0", "Lightning>=2.4", "lightning[extra]>=2"])
def test_job_that_lists_lightning_is_not_given_a_second_one(tmp_path, own_line):
    job_dir = write_job(tmp_path / "toy", {"requirements.txt": f"numpy\n{own_line}\n"})
    package = build(job_dir, tmp_path / "cache")

    lines = read_member(package.path, "requirements.txt").decode().splitlines()
    assert own_line in lines
    assert [line for line in lines if re.match(r"^\s*lightning\b", line, re.I)] == [own_line]


# -- exclusions ------------------------------------------------------------------------------------

SECRET = "SECRET-TOKEN-do-not-ship"


def test_a_job_that_is_its_own_repository_keeps_out_its_git_folder_and_ignores_outer_rules(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("*.log\n")
    job_dir = write_job(tmp_path / "jobs" / "toy", {".git/config": "[core]\n", "train.log": "epoch 1\n"})

    package = build(job_dir, tmp_path / "cache")

    names = set(members(package.path))
    assert ".git/config" not in names and ".git/" in package.excluded
    assert "train.log" in names  # the outer repository's .gitignore does not reach into a nested one


def test_caches_vcs_venvs_ignored_files_and_secrets_stay_out(tmp_path):
    (tmp_path / ".git").mkdir()  # tmp_path is a git root: its .gitignore applies to the job
    (tmp_path / ".gitignore").write_text("*.log\n")
    job_dir = write_job(
        tmp_path / "jobs" / "toy",
        {
            # version control, caches, virtualenvs
            ".hg/store": "data",
            "__pycache__/model.cpython-311.pyc": b"\x00pyc",
            "pkg/__pycache__/util.cpython-311.pyc": b"\x00pyc",
            "stale.pyc": b"\x00pyc",
            ".venv/pyvenv.cfg": "home = /usr\n",
            ".venv/lib/site.py": "",
            "myenv/pyvenv.cfg": "home = /usr\n",
            "myenv/lib/thing.py": "",
            ".pytest_cache/v/cache/nodeids": "[]",
            # the job's own ignore files
            ".gitignore": "outputs/\n*.ckpt\n",
            ".dlignore": "data/*.csv\n!data/keep.csv\n",
            "outputs/run1/metrics.txt": "1",
            "model.ckpt": b"weights",
            "data/big.csv": "1,2\n",
            "data/keep.csv": "3,4\n",
            "data/readme.txt": "about the data\n",
            # matched by the parent's .gitignore
            "train.log": "epoch 1\n",
            "pkg/nested.log": "epoch 2\n",
            # likely secrets
            ".env": SECRET,
            ".env.local": SECRET,
            ".env.example": "API_KEY=changeme\n",
            "key.pem": SECRET,
            "id_rsa": SECRET,
            "id_ed25519.pub": SECRET,
            ".aws/credentials": SECRET,
            "credentials.json": SECRET,
            ".netrc": SECRET,
            # ordinary files that must be kept
            "pkg/util.py": "X = 1\n",
        },
    )

    package = build(job_dir, tmp_path / "cache")
    names = set(members(package.path))

    assert names == {
        "job.toml", "model.py", "data.py", "pkg/util.py", ".gitignore", ".dlignore", "data/keep.csv",
        "data/readme.txt", ".env.example", "requirements.txt", "dl_entry.py", "dl_job.json",
    }  # fmt: skip
    assert SECRET.encode() not in all_member_bytes(package.path)
    assert package.secrets == sorted(
        [".env", ".env.local", "key.pem", "id_rsa", "id_ed25519.pub", ".aws/", "credentials.json", ".netrc"]
    )
    for entry in (
        ".hg/", "__pycache__/", "pkg/__pycache__/", "stale.pyc", ".venv/", "myenv/", ".pytest_cache/",
        "outputs/", "model.ckpt", "data/big.csv", "train.log", "pkg/nested.log",
    ):  # fmt: skip
        assert entry in package.excluded, entry
    assert not set(package.secrets) & set(package.excluded)
    assert package.excluded == sorted(package.excluded)


def test_gitignore_in_a_subfolder_applies_only_below_it(tmp_path):
    job_dir = write_job(
        tmp_path / "toy",
        {"sub/.gitignore": "*.tmp\n", "sub/a.tmp": "a", "sub/deeper/b.tmp": "b", "top.tmp": "t"},
    )
    package = build(job_dir, tmp_path / "cache")
    names = set(members(package.path))

    assert "top.tmp" in names
    assert "sub/a.tmp" not in names and "sub/deeper/b.tmp" not in names
    assert {"sub/a.tmp", "sub/deeper/b.tmp"} <= set(package.excluded)


def test_dlignore_negation_can_re_include_what_gitignore_drops(tmp_path):
    job_dir = write_job(
        tmp_path / "toy",
        {".gitignore": "*.json\n", ".dlignore": "!labels.json\n", "labels.json": "{}", "cache.json": "{}"},
    )
    names = set(members(build(job_dir, tmp_path / "cache").path))

    assert "labels.json" in names
    assert "cache.json" not in names


def test_parent_gitignore_without_a_git_root_does_not_apply(tmp_path):
    # No .git anywhere above: the job is not in a repository, so a stray .gitignore up there is not its own.
    (tmp_path / ".gitignore").write_text("*.log\n")
    job_dir = write_job(tmp_path / "jobs" / "toy", {"train.log": "epoch 1\n"})

    names = set(members(build(job_dir, tmp_path / "cache").path))

    assert "train.log" in names


def test_parent_gitignore_is_read_relative_to_its_own_folder(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("/jobs/toy/scratch/\n/notes.txt\n")
    job_dir = write_job(tmp_path / "jobs" / "toy", {"scratch/x.py": "", "notes.txt": "kept: anchored elsewhere"})

    package = build(job_dir, tmp_path / "cache")
    names = set(members(package.path))

    assert "scratch/x.py" not in names
    assert "scratch/" in package.excluded
    assert "notes.txt" in names  # '/notes.txt' means the repo root's notes.txt, not the job's


def test_symlinked_folder_is_left_out(tmp_path):
    outside = tmp_path / "outside"
    (outside / "private").mkdir(parents=True)
    (outside / "private" / "notes.txt").write_text(SECRET)
    job_dir = write_job(tmp_path / "toy")
    (job_dir / "linked").symlink_to(outside / "private", target_is_directory=True)

    package = build(job_dir, tmp_path / "cache")

    assert "linked/" in package.excluded
    assert SECRET.encode() not in all_member_bytes(package.path)


def test_symlinked_file_pointing_outside_the_job_is_left_out(tmp_path):
    # A link named innocently to a private file elsewhere (here: an AWS credentials file) must not
    # smuggle its content into the package; folder links are already refused the same way.
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(SECRET)
    job_dir = write_job(tmp_path / "toy")
    (job_dir / "settings.ini").symlink_to(home / ".aws" / "credentials")

    package = build(job_dir, tmp_path / "cache")

    assert SECRET.encode() not in all_member_bytes(package.path)
    assert "settings.ini" not in members(package.path)


# -- refusals --------------------------------------------------------------------------------------


def test_too_large_names_the_largest_files_and_writes_nothing(tmp_path):
    job_dir = write_job(tmp_path / "toy", {"small.txt": "x"})
    with open(job_dir / "weights.bin", "wb") as f:
        f.truncate(3 * 1024 * 1024)  # sparse: fast to make, 3 MB to stat
    with open(job_dir / "sub.bin", "wb") as f:
        f.truncate(512 * 1024)
    cache = tmp_path / "cache"

    with pytest.raises(PackageError, match=r"over the 1 MB limit") as info:
        build(job_dir, cache, max_mb=1)

    err = info.value
    assert_one_line(err)
    assert "weights.bin (3.0 MB)" in err.message
    assert "sub.bin (0.5 MB)" in err.message
    assert err.message.index("weights.bin") < err.message.index("sub.bin")  # largest first
    for word in ("--data", ".dlignore", "DL_MAX_PACKAGE_MB"):
        assert word in err.hint
    assert not cache.exists() or not any(cache.iterdir())


def test_ignored_large_files_do_not_count_towards_the_limit(tmp_path):
    job_dir = write_job(tmp_path / "toy", {".dlignore": "*.bin\n"})
    with open(job_dir / "weights.bin", "wb") as f:
        f.truncate(3 * 1024 * 1024)

    package = build(job_dir, tmp_path / "cache", max_mb=1)

    assert "weights.bin" in package.excluded
    assert "weights.bin" not in members(package.path)


@pytest.mark.parametrize("line", ["torch", "Torch==2.1", "torch>=2 # comment", "  torch[cuda]==2.3"])
def test_requirements_listing_torch_are_refused_with_file_and_line(tmp_path, line):
    job_dir = write_job(tmp_path / "toy", {"requirements.txt": f"numpy\n# a comment\n{line}\n"})
    cache = tmp_path / "cache"

    with pytest.raises(PackageError, match="torch") as info:
        build(job_dir, cache)

    assert_one_line(info.value)
    assert f"{job_dir / 'requirements.txt'}:3" in info.value.message
    assert info.value.hint
    assert not cache.exists() or not any(cache.iterdir())


def test_torch_family_packages_and_comments_are_allowed(tmp_path):
    reqs = "torchvision==0.18\ntorchmetrics\n# torch is provided by the container\n"
    job_dir = write_job(tmp_path / "toy", {"requirements.txt": reqs})

    lines = read_member(build(job_dir, tmp_path / "cache").path, "requirements.txt").decode().splitlines()

    assert "torchvision==0.18" in lines
    assert "torchmetrics" in lines


@pytest.mark.parametrize("name", ["dl_entry.py", "dl_job.json"])
def test_job_file_clashing_with_a_generated_file_is_refused(tmp_path, name):
    job_dir = write_job(tmp_path / "toy", {name: "mine"})

    with pytest.raises(PackageError, match="clashes") as info:
        build(job_dir, tmp_path / "cache")

    assert str(job_dir / name) in info.value.message
    assert_one_line(info.value)


def test_generated_names_in_a_subfolder_are_not_a_clash(tmp_path):
    job_dir = write_job(tmp_path / "toy", {"vendor/dl_entry.py": "mine = True\n"})

    package = build(job_dir, tmp_path / "cache")

    assert read_member(package.path, "vendor/dl_entry.py") == b"mine = True\n"
    assert read_member(package.path, "dl_entry.py") == RUNTIME_ENTRY.read_bytes()


# -- extraction ------------------------------------------------------------------------------------


def test_extract_round_trips_a_built_package(tmp_path):
    job_dir = write_job(tmp_path / "toy", {"pkg/util.py": "X = 1\n", "run.sh": "#!/bin/sh\n"})
    os.chmod(job_dir / "run.sh", 0o755)
    package = build(job_dir, tmp_path / "cache")
    dest = tmp_path / "out"

    extract_package(package.path, dest)

    extracted = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert extracted == {f.name for f in package.files}
    for rel in ("job.toml", "model.py", "data.py", "pkg/util.py"):
        assert (dest / rel).read_bytes() == (job_dir / rel).read_bytes()
    assert (dest / "dl_entry.py").read_bytes() == RUNTIME_ENTRY.read_bytes()
    assert json.loads((dest / "dl_job.json").read_text())["model"] == "model:M"
    assert (dest / "run.sh").stat().st_mode & stat.S_IXUSR


def _malicious_archive(path: Path, evil: tarfile.TarInfo, payload: bytes = b"pwned") -> Path:
    """A tar.gz whose first member is harmless and whose second is ``evil``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        if evil.isfile():
            evil.size = len(payload)
            tar.addfile(evil, io.BytesIO(payload))
        else:
            tar.addfile(evil)
    path.write_bytes(raw.getvalue())
    return path


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "make_evil",
    [
        pytest.param(lambda outside: tarfile.TarInfo("../evil"), id="dotdot"),
        pytest.param(lambda outside: tarfile.TarInfo("sub/../../evil"), id="nested-dotdot"),
        pytest.param(lambda outside: tarfile.TarInfo(str(outside / "evil")), id="absolute"),
        pytest.param(lambda outside: _symlink("link", str(outside / "evil")), id="symlink-out"),
        pytest.param(lambda outside: _symlink("link", "ok.txt"), id="symlink-in"),
        pytest.param(lambda outside: _hardlink("hard", "ok.txt"), id="hardlink"),
    ],
)
def test_extract_refuses_unsafe_members_and_writes_nothing(tmp_path, make_evil):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "box" / "dest"
    archive = _malicious_archive(tmp_path / "evil.tar.gz", make_evil(outside))

    with pytest.raises(PackageError, match="unsafe entry") as info:
        extract_package(archive, dest)

    assert str(archive) in info.value.message
    assert_one_line(info.value)
    assert list(dest.iterdir()) == []  # not even the harmless member
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == ["dest"]
