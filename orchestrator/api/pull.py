"""Pulling a run's model and checkpoints to this machine, verified and resumable."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.backends import Capability, require
from orchestrator.backends.base import Artifact
from orchestrator.client import Client, using
from orchestrator.errors import ArtifactError, UsageError
from orchestrator.store import Run, RunStatus

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
    redone: dict[Path, str] = field(default_factory=dict)  # unpacked again: why the file there did not match
    notes: list[str] = field(default_factory=list)  # one line each (a script's own checkpoint format)
    bytes: int = 0
    resumed_bytes: int = 0
    backoffs: int = 0  # pauses before continuing a download that broke off bringing nothing


def pull(
    run_id: str,
    *,
    to: Path | None = None,
    which: str = "best",
    dry_run: bool = False,
    progress: bool | None = None,
    client: Client | None = None,
) -> PullResult:
    """Bring the model and checkpoints of a run into ``to`` (default ``./<run-id>``).

    ``which``: best (the best checkpoint, or last when the job monitors nothing), last,
    or all (every checkpoint plus metrics). pull() never leaves a partial file in place:
    each file is verified and renamed into place only when complete (a corrupt checkpoint
    is reported by name), files already there and unchanged are skipped, and an
    interrupted pull continues where it stopped. Checkpoints keep their paths under the run's
    checkpoint folder, so two never share a destination. A model archive is unpacked beside
    itself (orchestrator.unpack: whole members only, checked again on every pull).
    """
    from orchestrator.paths import one_source_per_destination, pull_destination
    from orchestrator.unpack import unpack

    with using(client) as dl:
        if which not in PULL_CHOICES:
            raise UsageError(f"Unknown choice {which!r}.", f"Use one of {', '.join(PULL_CHOICES)}.")
        store = dl.store
        run = store.get(run_id)
        backend = require(dl.backend(run.target), Capability.PULL)
        selected = select_artifacts(backend.artifacts(run), which)
        if not any(a.kind in ("checkpoint", "model") for a in selected):
            raise _nothing_to_pull(run)
        dest = pull_destination(to, Path.cwd() / run.id, create=not dry_run)
        items, notes = [], []
        # dl's own checkpoints are the runtime's, recorded in its manifest; a script run's other
        # checkpoint files are the script's own format (legacy torch.save, another framework's).
        script = "dl_script_args" in run.params
        own = {entry.get("file") for entry in backend.checkpoint_manifest(run)} if script else set()
        for artifact in selected:
            folder = {"model": "model", "checkpoint": "checkpoints", "metrics": "metrics"}[artifact.kind]
            check = None
            if script and artifact.kind == "checkpoint" and artifact.name not in own:
                notes.append(f"{artifact.name} is in the script's own format: pulled as the run wrote it, unchecked.")
            elif artifact.name.endswith(".ckpt"):
                label = f"{artifact.name} of run {run.id}"
                check = functools.partial(verify_checkpoint, name=label)
            items.append(PullItem(artifact, dest / folder / artifact.name, check))
        one_source_per_destination(items, dest)
        result = PullResult(dest, items, notes=notes)
        if dry_run:
            return result
        report = backend.download(run, items, dest, progress=progress)
        result.fetched, result.skipped = report.fetched, report.skipped
        result.bytes, result.resumed_bytes, result.backoffs = report.bytes, report.resumed_bytes, report.backoffs
        for item in items:
            if item.dest.name.endswith(".tar.gz"):
                done = unpack(item.dest, fresh=item.dest in report.fetched)
                result.unpacked += done.paths
                result.redone.update({item.dest.parent / name: why for name, why in done.redone.items()})
        return result


def _nothing_to_pull(run: Run) -> ArtifactError:
    """Why a run has nothing to pull: still early, ended without writing any, or its files are gone."""
    places = [uri for uri in (run.checkpoint_uri, run.model_uri) if uri]
    gone = [uri for uri in places if "://" not in uri and not Path(uri).exists()]
    if run.status.is_terminal and (gone or (places and run.status is RunStatus.COMPLETED)):
        return ArtifactError(
            f"Run {run.id} ended ({run.status.value}), but its checkpoints and model are gone from"
            f" {' and '.join(gone or places)}.",
            "They were deleted or moved; `dl show` still has the run's record and metrics.",
        )
    if run.status.is_terminal:
        return ArtifactError(
            f"Run {run.id} ended ({run.status.value}) without a checkpoint or model.", "See `dl logs`."
        )
    return ArtifactError(
        f"Run {run.id} has no checkpoints or model yet (it is {run.status.value}).", "Check `dl show` and `dl logs`."
    )


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


def list_artifacts(run_id: str, *, client: Client | None = None) -> list[Artifact]:
    with using(client) as dl:
        store = dl.store
        run = store.get(run_id)
        return dl.backend(run.target).artifacts(run)
