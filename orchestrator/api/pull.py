"""Pulling a run's model and checkpoints to this machine, verified and resumable."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.backends import Capability, get_backend, require
from orchestrator.backends.base import Artifact
from orchestrator.errors import ArtifactError, UsageError
from orchestrator.store import open_store

PULL_CHOICES = ("best", "last", "all")


@dataclass
class PullItem:
    """One artifact and where it lands. ``verify(path, source_checked)`` raises ArtifactError for
    a bad file; ``source_checked`` says the bytes already matched the source's own checksum."""

    artifact: Artifact
    dest: Path
    verify: Callable[[Path, bool], None] | None = None


@dataclass
class PullResult:
    dest: Path
    planned: list[PullItem]
    fetched: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    unpacked: list[Path] = field(default_factory=list)
    bytes: int = 0
    resumed_bytes: int = 0
    backoffs: int = 0  # pauses before continuing a download that broke off bringing nothing


def pull(
    run_id: str, *, to: Path | None = None, which: str = "best", dry_run: bool = False, progress: bool | None = None
) -> PullResult:
    """Bring the model and checkpoints of a run into ``to`` (default ``./<run-id>``).

    ``which``: best (the best checkpoint, or last when the job monitors nothing), last,
    or all (every checkpoint plus metrics). pull() never leaves a partial file in place:
    each file is verified and renamed into place only when complete (a corrupt checkpoint
    is reported by name), files already there and unchanged are skipped, and an
    interrupted pull continues where it stopped. A model archive is unpacked beside itself.
    """
    if which not in PULL_CHOICES:
        raise UsageError(f"Unknown choice {which!r}.", f"Use one of {', '.join(PULL_CHOICES)}.")
    store = open_store()
    run = store.get(run_id)
    backend = require(get_backend(run.target), Capability.PULL)
    selected = select_artifacts(backend.artifacts(run), which)
    if not any(a.kind in ("checkpoint", "model") for a in selected):
        state = "" if run.status.is_terminal else f" (it is {run.status.value})"
        raise ArtifactError(f"Run {run.id} has no checkpoints or model yet{state}.", "Check `dl show` and `dl logs`.")
    dest = (to or Path.cwd() / run.id).expanduser().resolve()
    items = []
    for artifact in selected:
        folder = {"model": "model", "checkpoint": "checkpoints", "metrics": "metrics"}[artifact.kind]
        check = None
        if artifact.name.endswith(".ckpt"):
            label = f"{artifact.name} of run {run.id}"
            check = functools.partial(verify_checkpoint, name=label)
        items.append(PullItem(artifact, dest / folder / artifact.name, check))
    result = PullResult(dest, items)
    if dry_run:
        return result
    report = backend.download(run, items, dest, progress=progress)
    result.fetched, result.skipped = report.fetched, report.skipped
    result.bytes, result.resumed_bytes, result.backoffs = report.bytes, report.resumed_bytes, report.backoffs
    for item in items:
        if item.dest.name.endswith(".tar.gz"):
            result.unpacked += _unpack(item.dest, fresh=item.dest in report.fetched)
    return result


def _unpack(archive: Path, *, fresh: bool) -> list[Path]:
    """Unpack a model/output archive beside itself when it was just fetched or a member is missing
    (an earlier pull that stopped between the download and the unpacking)."""
    from orchestrator.packaging import safe_extract

    names = safe_extract(archive, archive.parent, dry_run=True)
    if fresh or any(not (archive.parent / name).is_file() for name in names):
        safe_extract(archive, archive.parent)
        return [archive.parent / name for name in names]
    return []


def select_artifacts(found: list[Artifact], which: str) -> list[Artifact]:
    models = [a for a in found if a.kind == "model"]
    checkpoints = [a for a in found if a.kind == "checkpoint"]
    if which == "all":
        return found
    wanted = "last.ckpt" if which == "last" else "best.ckpt"
    chosen = [a for a in checkpoints if a.name == wanted]
    if not chosen and which == "best":
        chosen = [a for a in checkpoints if a.name == "last.ckpt"]
    return models + chosen


def verify_checkpoint(path: Path, source_checked: bool = False, *, name: str | None = None) -> None:
    """A checkpoint is a zip archive (torch.save); check it without importing torch.

    Its structure always: the central directory, and every member inside the file. Every
    member's CRC too (reading it all) unless ``source_checked``: bytes that already matched
    the source's checksum (S3's CRC32 or MD5) are the checkpoint the run wrote, atomically."""
    import zipfile

    label = name or str(path)
    hint = "It cannot be loaded; pull --last or --all to get another checkpoint."
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            outside = next((m.filename for m in members if m.header_offset + m.compress_size > size), None)
            bad = outside or (None if source_checked else archive.testzip())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"Checkpoint {label} is corrupt ({exc}).", hint) from None
    if not members:
        raise ArtifactError(f"Checkpoint {label} is corrupt (an empty archive).", hint)
    if bad is not None:
        raise ArtifactError(f"Checkpoint {label} is corrupt (bad entry {bad}).", hint)


def list_artifacts(run_id: str) -> list[Artifact]:
    store = open_store()
    run = store.get(run_id)
    return get_backend(run.target).artifacts(run)
