"""Files written whole or not at all: a temporary file beside the target, then one rename.

Every file dl writes that a reader may open at any moment (dl.toml, a pull's manifest, a cached
package, a schedule's promoted checkpoint, the local contract's JSON) is written through
:func:`replacing` or :func:`atomic_write`, never in place. The guarantees:

- A reader sees the old file or the new one, never half of either: ``os.replace`` on the same
  file system is atomic (POSIX rename).
- A failure (an exception, Ctrl-C) while writing removes the temporary file; the target is
  untouched. A process killed outright (SIGKILL, power loss) can leave the temporary file
  behind, never a torn target.
- ``fsync=True`` (the default) flushes the new file's data to disk before the rename, so that
  after a crash the target holds the old text or the whole new text, not an empty file (ext4
  and XFS may otherwise commit the rename before the data). The folder itself is not fsynced:
  after a power loss the rename may be undone, leaving the old file. ``fsync=False`` is for
  files whose reader checks them anyway, where an fsync would cost more than it saves: the
  package cache compares the bytes with its digest; a pull's manifests, local copies and
  unpacked members are compared with their sources by the next pull (orchestrator/pulls.py).
- The file keeps the mode of the one it replaces (or takes the one given); a new file gets the
  usual umask mode.

The runtime (orchestrator/runtime/dl_entry.py) imports nothing from dl and keeps its own copy.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path, *, tmp: Path | None = None, fsync: bool = True, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write; when the block ends cleanly,
    fsync it (unless ``fsync=False``) and rename it over ``path``; when it raises, delete it.

    ``tmp`` names the temporary file where its name matters (the package cache finds the
    leftovers of dead builds by the pid in theirs); by default ``.NAME.PID-THREAD.tmp``, unique
    to this process and thread. ``mode`` sets the file's mode instead of keeping the old file's.
    The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if mode is not None:
            os.chmod(tmp, mode)
        else:
            try:
                os.chmod(tmp, path.stat().st_mode & 0o7777)
            except FileNotFoundError:
                pass  # a new file: the mode the umask gave it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: str | bytes, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8, newlines untranslated), as
    :func:`replacing` describes."""
    with replacing(path, fsync=fsync) as tmp:
        if isinstance(data, str):
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                handle.write(data)
        else:
            tmp.write_bytes(data)
