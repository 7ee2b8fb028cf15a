"""Turn a trainjob folder into the ``sourcedir.tar.gz`` that SageMaker expects.

The archive holds the job's files, our runtime entry point (``dl_entry.py``), the
job's declarations as ``dl_job.json`` and a ``requirements.txt`` that adds the
Lightning the runtime needs. It is deterministic: the same tree gives the same
bytes and so the same sha256, which names the package everywhere (the local
cache, S3 keys, run records). Version control folders, caches, virtualenvs,
ignored files and likely secrets never enter it.

Secrets (see secretscan.py): a file or folder whose *name* marks it as one is left out and named
(``Package.secrets``); a file whose *content* holds a credential refuses the whole package
(PackageError naming the file, line and kind, never the secret). Either is let through only
deliberately: a ``.dlignore`` negation (``!path``) or ``allow`` (``--allow-secret PATH``).

Symbolic links: a link to a folder is left out (as ``os.walk`` and ``git add`` do not descend into
one). A link to a file inside the job is packaged as the file it points at, after the name rules
are applied to both the link and its target (``deploy.txt → .ssh/id_rsa`` is a secret) and the
content scan to what it holds. A link that points outside the job folder is left out, as
``rsync --safe-links`` ignores links that leave the tree: what it reaches is not the job's.

The cache (``DL_HOME/packages/<sha256>.tar.gz``) is checked before use: a cached file whose bytes
are not the package's (edited, truncated) is replaced, and ``Package.notes`` says so.
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
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import secretscan
from orchestrator.errors import ArtifactError, PackageError, UsageError
from orchestrator.faults import fault
from orchestrator.fsutil import replacing
from orchestrator.jobs import Job

ENTRY_POINT = "dl_entry.py"
JOB_SPEC = "dl_job.json"
REQUIREMENTS = "requirements.txt"
_RUNTIME_SOURCE = Path(__file__).parent / "runtime" / "dl_entry.py"
# A script job's program: the wrapper that runs the script (it imports dl_entry.py's helpers).
SCRIPT_WRAPPER = "dl_script.py"
_WRAPPER_SOURCE = Path(__file__).parent / "runtime" / SCRIPT_WRAPPER
# What the training container already has; a script project's line for them is left out.
_CONTAINER_OWN = ("torch", "torchvision")
_FIXED_MTIME = 315532800  # 1980-01-01, as wheels and zip files do

_SKIP_DIRS = {
    ".git", ".hg", ".svn", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
    ".ipynb_checkpoints", ".tox", ".nox", "node_modules", ".venv", "venv", ".idea", ".vscode",
}  # fmt: skip
_SKIP_FILES = ("*.pyc", "*.pyo", ".DS_Store")
_STALE_TMP_S = 3600  # a temporary file this old is a dead build's even if its pid was reused


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
    notes: list[str] = field(default_factory=list)  # one line each for the user (a repaired cache)

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


def _lightning_requirement() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"lightning=={version('lightning')}"
    except PackageNotFoundError:
        return "lightning>=2.4,<3"


class _Ignores:
    """.gitignore/.dlignore rules from the job folder, its subfolders and its ancestors up to the repo root."""

    def __init__(self, root: Path) -> None:
        import pathspec

        self._pathspec = pathspec
        self.root = root
        self.specs: list[tuple[Path, str, object]] = []
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
                self.specs.append((folder, name, self._pathspec.GitIgnoreSpec.from_lines(lines)))

    def enter(self, folder: Path) -> None:
        self._load(folder)

    def _decisions(self, path: Path, is_dir: bool):
        for base, source, spec in self.specs:
            try:
                rel = path.relative_to(base).as_posix()
            except ValueError:
                continue
            check = spec.check_file(rel + "/" if is_dir else rel)
            if check.include is not None:
                yield source, check.include

    def ignored(self, path: Path, is_dir: bool) -> bool:
        result = False
        for _, include in self._decisions(path, is_dir):
            result = include
        return result

    def negated(self, path: Path, is_dir: bool) -> bool:
        """Whether the last rule that matches ``path`` is a ``.dlignore`` negation (``!path``)."""
        last = None
        for decision in self._decisions(path, is_dir):
            last = decision
        return last == (".dlignore", False)


@dataclass
class _Files:
    """What the walk found: files to package (``scan``: their content is still to be checked),
    and the names left out (``excluded``) or held back as secrets (``secrets``)."""

    keep: list[tuple[str, Path, bool]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)


def _collect(job_dir: Path, allow: list[str]) -> _Files:
    """Walk the job folder: sort every file into kept, excluded or secret (see the module docstring)."""
    ignores = _Ignores(job_dir)
    root = job_dir.resolve()
    allowed = set(allow)  # job-relative paths let through on purpose, folders included
    found = _Files()

    def let_through(rel: str, path: Path, is_dir: bool) -> bool:
        parts = rel.split("/")
        return any("/".join(parts[: i + 1]) in allowed for i in range(len(parts))) or ignores.negated(path, is_dir)

    for folder, dirs, files in os.walk(job_dir):
        here = Path(folder)
        ignores.enter(here)
        rel_here = here.relative_to(job_dir)
        for name in sorted(dirs):
            path = here / name
            rel = (rel_here / name).as_posix()
            if secretscan.secret_dir(rel) and not path.is_symlink():
                if let_through(rel, path, is_dir=True):
                    allowed.add(rel)
                    continue
                found.secrets.append(rel + "/")
            elif name in _SKIP_DIRS or (path / "pyvenv.cfg").exists() or path.is_symlink():
                found.excluded.append(rel + "/")
            elif ignores.ignored(path, is_dir=True):
                found.excluded.append(rel + "/")
            else:
                continue
            dirs.remove(name)
        dirs.sort()
        for name in sorted(files):
            path = here / name
            rel = (rel_here / name).as_posix()
            target = _link_target(path, root)  # None: not a link; "": a link out of the job (or broken)
            if secretscan.secret_name(name) or (target and secretscan.secret_path(target)):
                if not let_through(rel, path, is_dir=False):
                    found.secrets.append(rel)
                    continue
            if any(fnmatch.fnmatch(name, p) for p in _SKIP_FILES) or ignores.ignored(path, is_dir=False):
                found.excluded.append(rel)
            elif target == "" or not path.is_file() or (target and set(target.split("/")[:-1]) & _SKIP_DIRS):
                found.excluded.append(rel)  # not a regular file, a link out of the job, or into .git & co
            else:
                found.keep.append((rel, path, not let_through(rel, path, is_dir=False)))
    return found


def _link_target(path: Path, root: Path) -> str | None:
    """For a symbolic link, what it points at relative to the job folder (``root``, resolved), or ""
    when that is outside the job, missing or a loop; None for anything that is not a link."""
    if not path.is_symlink():
        return None
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return ""
    return target.relative_to(root).as_posix() if root in target.parents else ""


def _allowed_paths(job_dir: Path, allow: list[str] | None) -> list[str]:
    """``--allow-secret`` values as job-relative posix paths. A value is relative to the job folder
    (as refusals name files) or to the current folder, or absolute; it must name something in the job."""
    out = []
    root = job_dir.absolute()
    for raw in allow or []:
        given = Path(raw).expanduser()
        candidates = [given] if given.is_absolute() else [root / given, Path.cwd() / given]
        for path in candidates:
            path = Path(os.path.normpath(path))
            if root in path.parents and (path.exists() or path.is_symlink()):
                out.append(path.relative_to(root).as_posix())
                break
        else:
            raise UsageError(
                f"--allow-secret {raw}: there is no such file in the job folder {job_dir}.",
                "Give the path as the refusal names it, relative to the job folder.",
            )
    return out


def _merge_requirements(job_dir: Path, script: bool = False) -> bytes:
    """The package's requirements.txt: the job's own lines and the Lightning the runtime needs.
    A trainjob that lists torch is refused; a script project's torch and torchvision lines (an
    existing project usually has them) are commented out: the container's own are kept."""
    lines: list[str] = []
    own = job_dir / REQUIREMENTS
    names: set[str] = set()
    if own.is_file():
        for number, line in enumerate(own.read_text(encoding="utf-8").splitlines(), 1):
            match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#", 1)[0])
            if match:
                name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
                if script and name in _CONTAINER_OWN:
                    lines.append(f"# {line.strip()}  (left out by dl: the container's own {name} is used)")
                    continue
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
    if job.kind == "script":
        return (json.dumps(job.to_json() | {"path": None}, indent=2, sort_keys=True) + "\n").encode()
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


def build_package(job: Job, cache_dir: Path, max_mb: float, *, allow: list[str] | None = None) -> Package:
    """Build the package of ``job`` and keep it in ``cache_dir`` as ``<sha256>.tar.gz``.

    ``allow``: paths (relative to the job folder, as refusals name them) of secrets to package on
    purpose. Raises PackageError when the files add up to more than ``max_mb`` (naming the largest)
    or when a file holds a credential (naming each file, line and kind, never the secret).
    A cached file that is not byte for byte this package is replaced; a dead build's temporary
    files in ``cache_dir`` are removed.
    """
    found = _collect(job.path, _allowed_paths(job.path, allow))
    script = job.kind == "script"
    generated = {ENTRY_POINT, JOB_SPEC, SCRIPT_WRAPPER} if script else {ENTRY_POINT, JOB_SPEC}
    for rel, _, _ in found.keep:
        if rel in generated:
            raise PackageError(f"{job.path / rel} clashes with a file dl adds to every package.", "Rename it.")
    sizes = [(rel, path.stat().st_size) for rel, path, _ in found.keep]
    total = sum(size for _, size in sizes)
    if total > max_mb * 1024 * 1024:
        largest = sorted(sizes, key=lambda item: -item[1])[:5]
        listing = ", ".join(f"{rel} ({_mb(size)})" for rel, size in largest)
        raise PackageError(
            f"Package for {job.name} would be {_mb(total)}, over the {max_mb:g} MB limit; largest: {listing}.",
            "Pass data with --data CHANNEL=PATH, list big files in .dlignore, or raise DL_MAX_PACKAGE_MB.",
        )

    entries: dict[str, tuple[bytes, bool]] = {}
    findings: list[secretscan.Finding] = []
    for rel, path, scan in found.keep:
        data = path.read_bytes()
        if scan and (finding := secretscan.scan(data, rel)):
            findings.append(finding)
        entries[rel] = (data, bool(path.stat().st_mode & stat.S_IXUSR))
    if findings:
        raise _refusal(job, findings)
    entries[REQUIREMENTS] = (_merge_requirements(job.path, script), False)
    entries[ENTRY_POINT] = (_RUNTIME_SOURCE.read_bytes(), False)
    if script:
        entries[SCRIPT_WRAPPER] = (_WRAPPER_SOURCE.read_bytes(), False)
    entries[JOB_SPEC] = (_job_spec(job), False)

    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name in sorted(entries):
                data, executable = entries[name]
                _add(tar, name, data, executable)
    blob = raw.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    path, notes = _store(cache_dir, digest, blob)
    files = [PackagedFile(name, len(entries[name][0])) for name in sorted(entries)]
    return Package(path, digest, len(blob), files, sorted(found.excluded), sorted(found.secrets), notes)


def _refusal(job: Job, findings: list[secretscan.Finding]) -> PackageError:
    shown = ", ".join(str(f) for f in findings[:5]) + (f" and {len(findings) - 5} more" if len(findings) > 5 else "")
    first = findings[0].path
    return PackageError(
        f"Not packaging {job.name}: {shown} would be sent with the code.",
        f"Move the secret out of the job folder (an environment variable, a data channel), or send it on"
        f" purpose: add !{first} to {job.path / '.dlignore'} or pass --allow-secret {first}.",
    )


def cached_package(cache_dir: Path, sha256: str) -> Package | None:
    """The package ``sha256`` from ``cache_dir`` if its bytes still hash to that name; None when it is
    missing or damaged (edited, truncated). The file list is not read (``files`` is empty)."""
    path = cache_dir / f"{sha256}.tar.gz"
    try:
        with open(path, "rb") as handle:
            actual = hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        return None
    return Package(path, sha256, path.stat().st_size, []) if actual == sha256 else None


_TMP_NAME = re.compile(r"[0-9a-f]{64}\.tar\.tmp(\d+)")


def _store(cache_dir: Path, digest: str, blob: bytes) -> tuple[Path, list[str]]:
    """Put ``blob`` at ``cache_dir/<digest>.tar.gz`` (atomically: written to ``<digest>.tar.tmp<pid>``,
    then renamed) unless the same bytes are already there. Returns the path and the notes for the user."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(cache_dir)
    path = cache_dir / f"{digest}.tar.gz"
    notes = []
    try:
        if path.stat().st_size == len(blob) and path.read_bytes() == blob:
            return path, notes
        notes.append(
            f"The cached package {digest[:12]} in {cache_dir} was not what its name says (edited or cut"
            " short); it was built again."
        )
    except FileNotFoundError:
        pass
    view = memoryview(blob)
    try:  # No fsync: a torn file is caught above (its bytes are not its digest's) and built again.
        with replacing(path, tmp=path.with_suffix(f".tmp{os.getpid()}"), fsync=False) as tmp, open(tmp, "wb") as out:
            out.write(view[: len(blob) // 2])
            out.flush()
            fault("package-write")  # tests: a build killed halfway through writing the cache
            out.write(view[len(blob) // 2 :])
    except OSError as exc:
        raise PackageError(
            f"Cannot write the package {path} ({exc.strerror or exc}).", "Free some disk space there and retry."
        ) from None
    return path, notes


def _remove_leftovers(cache_dir: Path) -> None:
    """Delete the temporary files of builds that died (their pid is gone) or that are over an hour
    old (a dead build whose pid was reused); a live concurrent build's file stays."""
    now = time.time()
    for entry in os.scandir(cache_dir):
        match = _TMP_NAME.fullmatch(entry.name)
        if not match:
            continue
        try:
            stale = now - entry.stat(follow_symlinks=False).st_mtime > _STALE_TMP_S
            if stale or not _alive(int(match.group(1))):
                os.unlink(entry.path)
        except FileNotFoundError:
            pass  # its build finished (renamed it) or another cleaner was first


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


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
            check_members(archive, members, root)
            if not dry_run:
                tar.extractall(root, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArtifactError(f"{archive} is not a readable .tar.gz ({exc}).", "Pull it again.") from None
    return [m.name.lstrip("./") for m in members if m.isfile()]


def check_members(archive: Path, members: list[tarfile.TarInfo], root: Path) -> None:
    """ArtifactError unless every member is a plain file or folder that lands inside ``root``
    (resolved): no absolute paths, no '..', no links, devices or fifos, no way out through a
    symlink already inside ``root``."""
    for member in members:
        target = (root / member.name).resolve()
        if not (member.isfile() or member.isdir()) or root not in (target, *target.parents):
            raise ArtifactError(f"{archive} holds an unsafe entry {member.name!r}.")


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"
