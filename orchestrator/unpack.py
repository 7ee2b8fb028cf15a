"""Unpacking a pulled model.tar.gz beside itself: whole files only, recorded, checked again later.

:func:`unpack` keeps these promises:

- the archive's safe-extraction rules (packaging.check_members: no absolute paths, no '..',
  no links, devices or fifos) hold for every member before anything is written;
- nothing is written when the members add up to more than the destination's disk has free,
  or when they expand to more than ``MAX_RATIO`` times the archive (a gzip bomb: 2 MB that
  unpack to 2 GB); the refusal is one line with the figures and what to do;
- each member streams into ``.<name>.dlunpack`` beside its place and is renamed there only when
  whole, so a Ctrl-C or a full disk never leaves a shortened member under its own name;
- what was unpacked (member name, size, sha256, and the file's mtime) goes into a small manifest
  beside the archive (``.<archive>.unpacked.json``), rewritten atomically after each member and
  marked complete at the end;
- a later pull checks every member against it, as git checks its index: the file's size and
  mtime must be those recorded, and the archive must be the one they came from. A member that
  is missing, changed, or was never recorded as whole is unpacked again, and the result says
  which and why. A complete manifest whose files all match spares reading the archive at all,
  so a pull with nothing new does not decompress the model again. (Re-hashing a 1 GB model on
  every pull would cost more than a whole pull with nothing new; the sha256 stays in the
  manifest for anyone who wants to check the bytes.)
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shutil
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import ArtifactError
from orchestrator.fsutil import atomic_write, replacing
from orchestrator.pulls import write_error

MAX_RATIO = 200  # members may add up to this many times the archive's size...
RATIO_FLOOR = 64 * 1024 * 1024  # ...or to this much, whatever the ratio (small archives compress well)
CHUNK = 1024 * 1024


@dataclass
class Unpacked:
    """What :func:`unpack` wrote: every path, and for members written again, why."""

    paths: list[Path] = field(default_factory=list)
    redone: dict[str, str] = field(default_factory=dict)  # member name -> why it was unpacked again


def manifest_path(archive: Path) -> Path:
    return archive.with_name(f".{archive.name}.unpacked.json")


def unpack(archive: Path, *, fresh: bool) -> Unpacked:
    """Unpack ``archive`` into its own folder: every member when it was just fetched (``fresh``),
    else only the members whose files do not match the manifest. Raises ArtifactError for an
    unsafe, unreadable or oversized archive and for a write that fails (the disk full), leaving
    every member already there whole."""
    root = archive.parent.resolve()
    stamp = _stamp(archive)
    recorded, complete = ({}, False) if fresh else _load(archive, stamp)
    if complete and all(_mismatch(root / name, entry.get("size"), entry) is None for name, entry in recorded.items()):
        return Unpacked()  # every member as unpacked before: the archive need not even be read
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            _check(archive, members, root)
            files = {_name(m): m for m in members if m.isfile()}  # a name given twice: the last wins, as in tar
            todo, result = {}, Unpacked()
            for name, member in files.items():
                why = "" if fresh else _mismatch(root / name, member.size, recorded.get(name))
                if why is not None:
                    todo[name] = member
                    if why:
                        result.redone[name] = why
            kept = {name: entry for name, entry in recorded.items() if name in files and name not in todo}
            if todo:
                _check_space(archive, files.values(), todo.values(), root)
                _save(archive, {"archive": stamp, "members": kept, "complete": False})
            for member in members:
                if member.isdir() and todo:
                    (root / _name(member)).mkdir(parents=True, exist_ok=True)
            for name, member in todo.items():
                kept[name] = _write(tar, member, root / name)
                _save(archive, {"archive": stamp, "members": kept, "complete": False})
                result.paths.append(root / name)
            if todo or not complete:
                _save(archive, {"archive": stamp, "members": kept, "complete": True})
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArtifactError(f"{archive} is not a readable .tar.gz ({exc}).", "Pull it again.") from None
    return result


def _check(archive: Path, members: list[tarfile.TarInfo], root: Path) -> None:
    """The safe-extraction rules, and no member that would replace the archive or its manifest."""
    from orchestrator.packaging import check_members

    check_members(archive, members, root)
    own = {archive.name, manifest_path(archive).name}
    for member in members:
        if _name(member) in own:
            raise ArtifactError(f"{archive} holds an unsafe entry {member.name!r} (it would replace the archive).")


def _name(member: tarfile.TarInfo) -> str:
    """The member's path relative to the destination (``./model.ckpt`` → ``model.ckpt``)."""
    return posixpath.normpath(member.name).lstrip("/")


def _stamp(archive: Path) -> dict:
    stat = archive.stat()
    return {"name": archive.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _load(archive: Path, stamp: dict) -> tuple[dict, bool]:
    """The members recorded as unpacked whole from this very archive ({} for another or none), and
    whether they are all of its files (``complete``: the unpack that wrote them finished)."""
    try:
        manifest = json.loads(manifest_path(archive).read_text())
    except (OSError, ValueError):
        return {}, False
    if not isinstance(manifest, dict) or manifest.get("archive") != stamp:
        return {}, False
    members = manifest.get("members")
    if not isinstance(members, dict) or not all(isinstance(e, dict) for e in members.values()):
        return {}, False
    return members, manifest.get("complete") is True


def _save(archive: Path, manifest: dict) -> None:
    path = manifest_path(archive)
    try:
        atomic_write(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n", fsync=False)
    except OSError as exc:
        raise write_error(path, exc) from None


def _mismatch(path: Path, size: int | None, entry: dict | None) -> str | None:
    """None when the file at ``path`` is the member as unpacked before; else why it is to be
    unpacked: "" when it was never there, else why the file there is not it."""
    try:
        stat = path.stat()
    except OSError:
        stat = None
    if entry is None:
        return "" if stat is None else "it was never recorded as unpacked whole"
    if stat is None:
        return "it was missing"
    if stat.st_size != size:
        return f"it had {stat.st_size} of its {size} bytes"
    if entry.get("size") != size or entry.get("mtime_ns") != stat.st_mtime_ns:
        return "it changed since it was unpacked"
    return None


def _check_space(archive: Path, files, todo, root: Path) -> None:
    """Refuse, writing nothing, what the disk cannot take or what expands like a gzip bomb."""
    total = sum(m.size for m in files)
    needed = sum(m.size for m in todo)
    free = shutil.disk_usage(root).free
    if needed > free:
        raise ArtifactError(
            f"Unpacking {archive} needs {_size(needed)}, but {root} has {_size(free)} free.",
            "Free some disk space, or pull --to a folder on a larger disk.",
        )
    packed = archive.stat().st_size
    if total > RATIO_FLOOR and total > MAX_RATIO * packed:
        raise ArtifactError(
            f"{archive} ({_size(packed)}) would unpack to {_size(total)}, {total // max(packed, 1)} times its size:"
            " that is a gzip bomb, not a model.",
            f"Nothing was unpacked. If you trust it, unpack it yourself: tar -xzf {archive} -C {root}",
        )


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> dict:
    """Stream one member into a temporary file beside ``path`` and rename it there; its manifest entry."""
    digest = hashlib.sha256()
    source = tar.extractfile(member)
    tmp = path.with_name(f".{path.name}.dlunpack")
    mode = 0o755 if member.mode & 0o100 else 0o644
    try:
        with replacing(path, tmp=tmp, fsync=False, mode=mode) as tmp, open(tmp, "wb") as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        raise write_error(path, exc) from None
    return {"size": member.size, "sha256": digest.hexdigest(), "mtime_ns": path.stat().st_mtime_ns}


def _size(num: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if num >= scale:
            return f"{num / scale:.1f} {unit}"
    return f"{num} bytes"
