"""Paths a person gives dl, checked before anything uses them: ``--data`` channels, ``dl pull --to``,
and where a pull plan puts each file.

Each check turns what would otherwise surface deep inside a copy as "Unexpected error" (a symlink
loop, a destination that is a file, a folder of /proc) into one line that says what to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import ArtifactError, UsageError

if TYPE_CHECKING:
    from orchestrator.api import PullItem

# Kernel and device file systems: nothing a pull writes belongs there.
SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))


def resolve_channels(data: Mapping[str, str]) -> dict[str, str]:
    """``--data NAME=PATH`` values with local paths made absolute (URIs as given). A path that cannot
    be resolved (a symlink loop) is refused naming it. (An empty path is refused where the options
    are made: options.LaunchOptions.)"""
    out: dict[str, str] = {}
    for name, path in data.items():
        if "://" in path:
            out[name] = path
            continue
        try:
            out[name] = str(Path(path).expanduser().resolve(strict=False))
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop, before Python 3.13
            raise UsageError(
                f"--data {name}={path} cannot be followed ({_why(exc)}).",
                "Point it at the real folder, or fix the symlinks on the way there.",
            ) from None
    return out


def pull_destination(to: Path | None, default: Path, *, create: bool) -> Path:
    """The folder a pull writes into: ``to`` (or ``default``) resolved, checked and, with ``create``,
    made and proven writable.

    Refused: a path that is a file, a path that cannot be resolved (a symlink loop), anything in
    /proc, /sys or /dev, and ``/`` itself. rsync and tar write into ``/`` when told to, but they
    copy a tree the user named; a pull adds its own ``model/``, ``checkpoints/``, ``metrics/`` and
    ``.dl-pull.json`` to the destination, and nobody wants those at the root of the file system
    (``dl pull RUN --to /`` is a slip for ``--to ./`` or ``--to /somewhere/RUN``). A refusal rather
    than a question, so that scripts get the same answer as people."""
    given = to if to is not None else default
    try:
        dest = given.expanduser().resolve()
    except (OSError, RuntimeError) as exc:
        raise UsageError(f"--to {given} cannot be followed ({_why(exc)}).", "Give another folder.") from None
    if dest == Path(dest.anchor):
        raise UsageError(
            f"--to {given} is the root of the file system; a pull writes model/, checkpoints/ and metrics/ there.",
            "Give a folder for this run, e.g. --to ./RUN.",
        )
    if any(dest == folder or folder in dest.parents for folder in SYSTEM_FOLDERS):
        raise UsageError(f"--to {given} is a system folder ({dest}).", "Give a folder of your own, e.g. --to ./RUN.")
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--to {given} is a file, not a folder.", "Give a folder (it is created if missing).")
    if create:
        import tempfile

        try:
            dest.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=dest):
                pass
        except OSError as exc:
            raise UsageError(
                f"Cannot write into --to {given} ({_why(exc)}).", "Give a folder you can write to."
            ) from None
    return dest


def one_source_per_destination(items: Iterable[PullItem], root: Path) -> None:
    """A bug check on a pull plan: every destination lies inside ``root`` and no two sources share one
    (two objects written to one file leave a file that is neither)."""
    seen: dict[Path, str] = {}
    for item in items:
        dest = item.dest
        if root not in dest.parents or ".." in dest.parts:
            raise ArtifactError(f"{item.artifact.location} would be written outside {root}, to {dest}.", _BUG)
        if dest in seen:
            raise ArtifactError(f"{seen[dest]} and {item.artifact.location} would both be written to {dest}.", _BUG)
        seen[dest] = item.artifact.location


_BUG = "Nothing was pulled. This is a bug in dl: please report it with the run's `dl show --json`."


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, RuntimeError):
        return "a symlink loop"
    return str(exc) or type(exc).__name__
