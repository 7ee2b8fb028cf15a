"""Turn a trainjob folder into the ``sourcedir.tar.gz`` that SageMaker expects.

The archive holds the job's files, our runtime entry point (``dl_entry.py``), the
job's declarations as ``dl_job.json`` and a ``requirements.txt`` that adds the
Lightning the runtime needs. It is deterministic: the same tree gives the same
bytes and so the same sha256, which names the package everywhere (the local
cache, S3 keys, run records). Version control folders, caches, virtualenvs,
ignored files and likely secrets never enter it.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import ArtifactError, PackageError
from orchestrator.jobs import Job

ENTRY_POINT = "dl_entry.py"
JOB_SPEC = "dl_job.json"
REQUIREMENTS = "requirements.txt"
_RUNTIME_SOURCE = Path(__file__).parent / "runtime" / "dl_entry.py"
_FIXED_MTIME = 315532800  # 1980-01-01, as wheels and zip files do

_SKIP_DIRS = {
    ".git", ".hg", ".svn", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
    ".ipynb_checkpoints", ".tox", ".nox", "node_modules", ".venv", "venv", ".idea", ".vscode",
}  # fmt: skip
_SKIP_FILES = ("*.pyc", "*.pyo", ".DS_Store")
_SECRET_DIRS = {".aws", ".ssh", ".gnupg", ".docker"}
_SECRET_FILES = (
    ".env", ".env.*", "*.pem", "*.key", "*.p12", "*.pfx", "id_rsa*", "id_dsa*", "id_ecdsa*",
    "id_ed25519*", "credentials", "credentials.*", ".netrc", ".pypirc", ".git-credentials",
    "*.kdbx", "service-account*.json",
)  # fmt: skip
_NOT_SECRET = (".env.example", ".env.sample", ".env.template")


@dataclass
class PackagedFile:
    name: str
    size: int


@dataclass
class Package:
    """A built package. ``path`` is content-addressed: ``<sha256>.tar.gz``."""

    path: Path
    sha256: str
    size: int
    files: list[PackagedFile]
    excluded: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


def _lightning_requirement() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"lightning=={version('lightning')}"
    except PackageNotFoundError:
        return "lightning>=2.4,<3"


def _is_secret(name: str) -> bool:
    if name in _NOT_SECRET:
        return False
    return any(fnmatch.fnmatch(name, pattern) for pattern in _SECRET_FILES)


class _Ignores:
    """.gitignore/.dlignore rules from the job folder, its subfolders and its ancestors up to the repo root."""

    def __init__(self, root: Path) -> None:
        import pathspec

        self._pathspec = pathspec
        self.root = root
        self.specs: list[tuple[Path, object]] = []
        ancestors = []
        if not (root / ".git").exists():  # a job that is its own repository has no outer rules
            for folder in root.parents:
                ancestors.append(folder)
                if (folder / ".git").exists():
                    break
            else:
                ancestors = []
        for folder in reversed(ancestors):
            self._load(folder)

    def _load(self, folder: Path) -> None:
        for name in (".gitignore", ".dlignore"):
            path = folder / name
            if path.is_file():
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
                self.specs.append((folder, self._pathspec.GitIgnoreSpec.from_lines(lines)))

    def enter(self, folder: Path) -> None:
        self._load(folder)

    def ignored(self, path: Path, is_dir: bool) -> bool:
        result = False
        for base, spec in self.specs:
            try:
                rel = path.relative_to(base).as_posix()
            except ValueError:
                continue
            check = spec.check_file(rel + "/" if is_dir else rel)
            if check.include is not None:
                result = check.include
        return result


def _collect(job_dir: Path) -> tuple[list[tuple[str, Path]], list[str], list[str]]:
    """Walk the job folder; return (arcname, path) pairs, excluded names, secret names."""
    ignores = _Ignores(job_dir)
    keep: list[tuple[str, Path]] = []
    excluded: list[str] = []
    secrets: list[str] = []
    for folder, dirs, files in os.walk(job_dir):
        here = Path(folder)
        ignores.enter(here)
        rel_here = here.relative_to(job_dir)
        for name in sorted(dirs):
            path = here / name
            rel = (rel_here / name).as_posix()
            if name in _SECRET_DIRS:
                secrets.append(rel + "/")
            elif name in _SKIP_DIRS or (path / "pyvenv.cfg").exists() or path.is_symlink():
                excluded.append(rel + "/")
            elif ignores.ignored(path, is_dir=True):
                excluded.append(rel + "/")
            else:
                continue
            dirs.remove(name)
        dirs.sort()
        for name in sorted(files):
            path = here / name
            rel = (rel_here / name).as_posix()
            if _is_secret(name):
                secrets.append(rel)
            elif any(fnmatch.fnmatch(name, p) for p in _SKIP_FILES) or ignores.ignored(path, is_dir=False):
                excluded.append(rel)
            elif not path.is_file() or (path.is_symlink() and not _inside(path, job_dir)):
                excluded.append(rel)  # not a regular file, or a link out of the job (it may hold anything)
            else:
                keep.append((rel, path))
    return keep, excluded, secrets


def _inside(path: Path, folder: Path) -> bool:
    target = path.resolve()
    return folder.resolve() in target.parents


def _merge_requirements(job_dir: Path) -> bytes:
    lines: list[str] = []
    own = job_dir / REQUIREMENTS
    names: set[str] = set()
    if own.is_file():
        for number, line in enumerate(own.read_text(encoding="utf-8").splitlines(), 1):
            match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#", 1)[0])
            if match:
                name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
                if name == "torch":
                    raise PackageError(
                        f"{own}:{number} lists torch; the training container already has a matching torch.",
                        "Remove that line (dl installs torch locally through its 'train' extra).",
                    )
                names.add(name)
            lines.append(line)
    runtime = _lightning_requirement()
    header = ["# Added by dl: the runtime entry point needs Lightning."]
    if "lightning" not in names:
        header.append(runtime)
    body = "\n".join(header + ([""] + lines if lines else [])) + "\n"
    return body.encode()


def _job_spec(job: Job) -> bytes:
    spec = {
        "name": job.name,
        "model": job.model,
        "datamodule": job.datamodule,
        "monitor": job.monitor,
        "mode": job.mode,
        "find_unused_parameters": job.find_unused_parameters,
        "params": {n: p.to_json() for n, p in job.params.items()},
        "trainer": {n: p.to_json() for n, p in job.trainer.items()},
    }
    return (json.dumps(spec, indent=2, sort_keys=True) + "\n").encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes, executable: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _FIXED_MTIME
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def build_package(job: Job, cache_dir: Path, max_mb: float) -> Package:
    """Build (or find in ``cache_dir``) the package of ``job``.

    Raises PackageError when the files add up to more than ``max_mb``; the
    message names the largest files.
    """
    keep, excluded, secrets = _collect(job.path)
    generated = {ENTRY_POINT, JOB_SPEC}
    for rel, _ in keep:
        if rel in generated:
            raise PackageError(f"{job.path / rel} clashes with a file dl adds to every package.", "Rename it.")
    sizes = [(rel, path.stat().st_size) for rel, path in keep]
    total = sum(size for _, size in sizes)
    if total > max_mb * 1024 * 1024:
        largest = sorted(sizes, key=lambda item: -item[1])[:5]
        listing = ", ".join(f"{rel} ({_mb(size)})" for rel, size in largest)
        raise PackageError(
            f"Package for {job.name} would be {_mb(total)}, over the {max_mb:g} MB limit; largest: {listing}.",
            "Pass data with --data CHANNEL=PATH, list big files in .dlignore, or raise DL_MAX_PACKAGE_MB.",
        )

    entries: dict[str, tuple[bytes, bool]] = {}
    for rel, path in keep:
        mode = path.stat().st_mode
        entries[rel] = (path.read_bytes(), bool(mode & stat.S_IXUSR))
    entries[REQUIREMENTS] = (_merge_requirements(job.path), False)
    entries[ENTRY_POINT] = (_RUNTIME_SOURCE.read_bytes(), False)
    entries[JOB_SPEC] = (_job_spec(job), False)

    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name in sorted(entries):
                data, executable = entries[name]
                _add(tar, name, data, executable)
    blob = raw.getvalue()
    digest = hashlib.sha256(blob).hexdigest()

    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{digest}.tar.gz"
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    files = [PackagedFile(name, len(entries[name][0])) for name in sorted(entries)]
    return Package(path, digest, len(blob), files, sorted(excluded), sorted(secrets))


def extract_package(archive: Path, dest: Path) -> None:
    """Extract a package safely: no absolute paths, no '..', no links or devices."""
    try:
        safe_extract(archive, dest)
    except ArtifactError as exc:
        raise PackageError(exc.message, "Rebuild the package.") from None


def safe_extract(archive: Path, dest: Path, *, dry_run: bool = False) -> list[str]:
    """Extract a .tar.gz into ``dest`` refusing anything that could land outside it (absolute
    paths, '..', links, devices); return the names of its files. ``dry_run`` only checks."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                target = (root / member.name).resolve()
                if not (member.isfile() or member.isdir()) or root not in (target, *target.parents):
                    raise ArtifactError(f"{archive} holds an unsafe entry {member.name!r}.")
            if not dry_run:
                tar.extractall(root, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArtifactError(f"{archive} is not a readable .tar.gz ({exc}).", "Pull it again.") from None
    return [m.name.lstrip("./") for m in members if m.isfile()]


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"
