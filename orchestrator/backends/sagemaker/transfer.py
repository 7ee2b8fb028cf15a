"""S3 downloads that survive anything: parallel, resumable, verified, and never half-written.

``download_all`` fetches S3 objects into local files (the folder's manifest, the report and
the progress line are every backend's: orchestrator/pulls.py):

- an object already pulled and unchanged (same ETag and size in the folder's manifest, same
  size on disk) is skipped, so a second pull with nothing new costs one listing and no GET;
- each object streams into ``.<name>.dlpart`` beside its destination; a pull that is killed
  leaves the part, and the next one continues it with a ranged GET (``If-Match`` the same
  ETag, kept in ``.<name>.etag``) instead of starting over (objects under ``RESUMABLE`` bytes
  simply start over);
- a GET that fails outright (5xx, throttling) is retried by botocore; a body that breaks off
  mid-object is continued from the byte it reached: at once while the attempts bring new
  bytes, with a growing pause when they do not (``Report.backoffs`` counts them), and given up
  after ``ATTEMPTS`` in a row that bring nothing;
- a finished object is checked before it is renamed into place: its size; its bytes against
  S3's own checksum (the full-object checksum checked while a whole-object GET streams, or
  else the MD5 of a single-part ETag); and the caller's own check, e.g. that a checkpoint is a
  sound zip. Its sha256, computed while it streams, goes into the manifest
  (``.dl-pull.json``).

Every byte is hashed as it arrives, so a file is read back only by the caller's check.

Parts are not fsynced, as neither ``aws s3 sync`` nor s5cmd does: forcing a 530 MiB pull to
disk before it returns cost ~0.9 s of CPU and ~0.6 s of its 2.5 s here (bench/README.md). A
killed pull needs no fsync (the page cache outlives the process). After a power cut the
filesystem may lose the tail of a file written just before (ext4 in its default data=ordered
mode, xfs and btrfs shorten such a file, they do not fill it with other bytes): its size then
differs from the manifest's, so the next pull fetches it again, and a shortened part is
continued from its end and checked against the whole object's MD5 like any continued part.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.backends.sagemaker.aws import error_code
from orchestrator.errors import ArtifactError
from orchestrator.pulls import Progress, Report, load_manifest, save_manifest, write_error

# Bytes per read: each chunk is hashed (sha256, S3's CRC32) and written while it is still in the
# CPU's cache. 256 KiB took ~1.05 s of CPU for the bench's 512 MiB of large checkpoints, 1 MiB
# ~1.2-1.8 s (most of the difference system time); 64 KiB, 128 KiB, 512 KiB and 4 MiB more too.
CHUNK = 256 * 1024
# Bytes per write. Linux sizes a file's page-cache folios by the writes that fill them, and large
# folios come from the page allocator's high orders, which a VM with free page reporting (virtio
# balloon; Firecracker here) has handed back to its host: every first touch of such a page is a
# fault in the host. 256 KiB writes cost 0.8-1.5 s of system time for the bench's 531 MiB here,
# 128 KiB writes ~0.55 s (s5cmd, whose writes are 32 KiB: ~0.6 s); on other machines the extra
# write calls cost ~2 ms.
WRITE = 128 * 1024
ATTEMPTS = 6  # attempts in a row that bring no new byte before an object is given up
SAVE_EVERY = 0.5  # seconds between manifest saves while a pull runs (and one at its end)
WORKERS = 8  # objects fetched at once (the S3 client's connection pool is sized to match: aws._config)
RESUMABLE = 8 * 1024 * 1024  # smaller objects start over rather than keep an ETag marker beside their part


@dataclass
class Transfer:
    bucket: str
    key: str
    size: int
    etag: str
    dest: Path
    verify: Callable[[Path, bool], None] | None = None  # (part, matched the source's checksum)

    @property
    def part(self) -> Path:
        return self.dest.with_name(f".{self.dest.name}.dlpart")

    @property
    def marker(self) -> Path:
        """Holds the ETag of the object version the part file is a prefix of."""
        return self.dest.with_name(f".{self.dest.name}.etag")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def unchanged(transfer: Transfer, manifest: dict, root: Path) -> bool:
    entry = manifest.get(str(transfer.dest.relative_to(root)))
    if not (entry and entry.get("etag") == transfer.etag and entry.get("size") == transfer.size):
        return False
    try:
        return transfer.dest.stat().st_size == transfer.size
    except OSError:
        return False


class _Book:
    """The manifest of one pull: an entry per finished file, saved every SAVE_EVERY seconds and at the end.

    A pull killed between two saves loses only the entries of files it finished since the last
    one; the next pull fetches those again, never trusts a file without an entry.
    """

    def __init__(self, root: Path, manifest: dict, report: Report) -> None:
        self.root, self.manifest, self.report = root, manifest, report
        self._lock = threading.Lock()
        self._saved = time.monotonic()
        self._dirty = False

    def record(self, transfer: Transfer, fetched: _Fetched) -> None:
        with self._lock:
            self.manifest[str(transfer.dest.relative_to(self.root))] = {
                "key": transfer.uri,
                "etag": transfer.etag,
                "size": transfer.size,
                "sha256": fetched.sha256,
                "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            self.report.fetched.append(transfer.dest)
            self.report.bytes += transfer.size - fetched.resumed
            self.report.resumed_bytes += fetched.resumed
            self.report.backoffs += fetched.backoffs
            self._dirty = True
            if time.monotonic() - self._saved >= SAVE_EVERY:
                self._save()

    def save(self) -> None:
        with self._lock:
            if self._dirty:
                self._save()

    def _save(self) -> None:
        save_manifest(self.root, self.manifest)
        self._saved, self._dirty = time.monotonic(), False


def download_all(client, transfers: list[Transfer], root: Path, *, workers: int = WORKERS, progress=None) -> Report:
    """Fetch ``transfers`` (destinations under ``root``); skip those already there and unchanged.

    ``client`` is a botocore S3 client (or anything with its ``get_object``), or a function that
    makes one: it is called only when something needs fetching. Objects go largest first. An
    object that fails (corrupt, gone, unreachable) does not stop the others; the first failure
    is raised once they are done, and each object finished by then is in place and in the
    manifest. Ctrl-C stops every object at its next chunk, keeping its part for the next pull.
    """
    manifest = load_manifest(root)
    report = Report()
    todo = []
    for transfer in transfers:
        if unchanged(transfer, manifest, root):
            report.skipped.append(transfer.dest)
        else:
            todo.append(transfer)
    if not todo:
        return report
    todo.sort(key=lambda t: t.size, reverse=True)
    progress = progress or Progress(0)
    progress.total = sum(t.size for t in todo)
    from concurrent.futures import ThreadPoolExecutor, wait

    s3 = client() if callable(client) else client
    book = _Book(root, manifest, report)
    stop = threading.Event()

    def one(transfer: Transfer) -> None:
        book.record(transfer, _fetch(s3, transfer, progress, stop))

    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo))), thread_name_prefix="dl-pull")
    try:
        futures = [pool.submit(one, t) for t in todo]
        wait(futures)
    except BaseException:  # Ctrl-C: stop every object at its next chunk
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        book.save()
        progress.close()
    failed = [(t, f.exception()) for t, f in zip(todo, futures, strict=True) if f.exception() is not None]
    if failed:
        transfer, error = failed[0]
        if len(failed) > 1 and isinstance(error, ArtifactError):
            others = ", ".join(t.dest.name for t, _ in failed[1:4]) + (", ..." if len(failed) > 4 else "")
            raise ArtifactError(f"{error.message} ({len(failed) - 1} more failed: {others})", error.hint) from None
        raise error
    return report


class _Stopped(Exception):
    """The pull is being stopped (Ctrl-C); the part file stays for the next one."""


class _Digest:
    """sha256 of the part's bytes so far, in order, and their MD5 from when it is wanted."""

    def __init__(self, etag: str) -> None:
        self.sha = hashlib.sha256()
        self.md5 = None
        self.size = 0
        self._md5_etag = len(etag) == 32 and "-" not in etag  # a multipart ETag is no MD5

    def update(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        if self.md5 is not None:
            self.md5.update(chunk)
        self.size += len(chunk)

    def want_md5(self, part: Path) -> None:
        """Track the MD5 too (needed unless one GET brought the whole object under S3's checksum)."""
        if self.md5 is None and self._md5_etag:
            self.md5 = hashlib.md5()
            self._read(part, self.size, self.md5)

    def continue_from(self, part: Path, size: int) -> None:
        """Start from an earlier pull's part of ``size`` bytes (what follows comes by ranged GET)."""
        self.md5 = hashlib.md5() if self._md5_etag else None
        self._read(part, size, self.sha, self.md5)
        self.size = size

    def reset(self) -> None:
        self.sha, self.md5, self.size = hashlib.sha256(), None, 0

    @staticmethod
    def _read(part: Path, size: int, *hashes) -> None:
        left = size
        with open(part, "rb") as handle:
            while left > 0:
                block = handle.read(min(CHUNK, left))
                if not block:
                    break
                left -= len(block)
                for digest in hashes:
                    if digest is not None:
                        digest.update(block)


@dataclass(frozen=True)
class _Fetched:
    resumed: int  # bytes continued from an earlier pull's part
    sha256: str
    backoffs: int  # pauses taken on the way (see _download)


def _fetch(s3, transfer: Transfer, progress: Progress, stop: threading.Event) -> _Fetched:
    """Stream one object into its part file (continuing an earlier part), check it, rename it into
    place."""
    part = transfer.part
    resumed = _continuable(transfer)
    digest = _Digest(transfer.etag)
    if resumed:
        digest.continue_from(part, resumed)
        progress.add(resumed)
    try:
        with open(part, "ab") as out:
            whole, backoffs = _download(s3, transfer, out, digest, progress, stop)
    except BaseException:
        if digest.size == 0:  # nothing worth keeping for the next pull
            part.unlink(missing_ok=True)
            transfer.marker.unlink(missing_ok=True)
        raise
    sha256 = _check(transfer, digest, whole)
    os.replace(part, transfer.dest)
    transfer.marker.unlink(missing_ok=True)
    return _Fetched(resumed, sha256, backoffs)


def _continuable(transfer: Transfer) -> int:
    """Bytes of an earlier part of this very object version to continue from; any other part is removed."""
    part, marker = transfer.part, transfer.marker
    try:
        size = part.stat().st_size
    except FileNotFoundError:
        transfer.dest.parent.mkdir(parents=True, exist_ok=True)
        size = 0
    if size:
        try:
            same = marker.read_text() == transfer.etag
        except OSError:
            same = False
        if same and size <= transfer.size:
            return size
        part.unlink()  # a part of another version of the object, or of a small one
    if transfer.size >= RESUMABLE:
        marker.write_text(transfer.etag)
    return 0


def _download(
    s3, transfer: Transfer, out, digest: _Digest, progress: Progress, stop: threading.Event
) -> tuple[bool, int]:
    """GETs until the part holds the whole object; returns (whether one GET brought all of it under
    S3's checksum, the pauses taken).

    A GET that fails outright (a 5xx, throttling, no connection) has had botocore's own retries
    and is raised; a body that breaks off is continued here from the byte it reached: at once when
    the attempt brought new bytes, else after a pause that doubles with each such attempt in a row.
    """
    whole, failures, backoffs = False, 0, 0
    while digest.size < transfer.size:
        offset = digest.size
        try:
            whole = _stream(s3, transfer, out, digest, progress, stop)
        except _Broken as broken:
            from botocore.exceptions import FlexibleChecksumError

            exc = broken.__cause__
            if isinstance(exc, FlexibleChecksumError):  # the bytes differ from S3's checksum: start over
                out.truncate(0)
                progress.add(-digest.size)
                digest.reset()
            failures = 0 if digest.size > offset else failures + 1
            if failures >= ATTEMPTS:
                raise ArtifactError(
                    f"Downloading {transfer.uri} kept failing ({type(exc).__name__}: {exc}).",
                    "Run the same pull again: it continues where it stopped.",
                ) from None
            if failures:
                backoffs += 1
                if stop.wait(min(0.2 * 2**failures, 5.0)):
                    raise _Stopped() from None
        except Exception as exc:
            if error_code(exc) in ("PreconditionFailed", "412"):
                out.close()
                transfer.part.unlink(missing_ok=True)
                transfer.marker.unlink(missing_ok=True)
                raise ArtifactError(f"{transfer.uri} changed during the pull.", "Pull again.") from None
            raise
    return whole, backoffs


class _Broken(Exception):
    """A response body that broke off (its cause: a dropped connection, a short read, a bad checksum)."""


def _stream(s3, transfer: Transfer, out, digest: _Digest, progress: Progress, stop: threading.Event) -> bool:
    """One GET from the part's end; True when it was the whole object and botocore checked its checksum."""
    kwargs = {"Bucket": transfer.bucket, "Key": transfer.key, "IfMatch": f'"{transfer.etag}"'}
    if digest.size:
        kwargs["Range"] = f"bytes={digest.size}-"
    body = s3.get_object(**kwargs)["Body"]
    whole = not digest.size and _checksummed(body)
    if not whole:
        out.flush()
        digest.want_md5(transfer.part)
    try:
        while True:
            try:
                chunk = body.read(CHUNK)
            except Exception as exc:
                raise _Broken() from exc
            if not chunk:
                return whole
            if stop.is_set():
                raise _Stopped()
            try:
                view = memoryview(chunk)
                for start in range(0, len(chunk), WRITE):
                    out.write(view[start : start + WRITE])
            except OSError as exc:
                raise write_error(transfer.part, exc) from None
            digest.update(chunk)
            progress.add(len(chunk))
    finally:
        body.close()


def _checksummed(body) -> bool:
    """Whether the body is checked against the object's full checksum at its end (botocore's raises
    FlexibleChecksumError on a mismatch); S3 sends one for whole-object GETs of objects that have one."""
    from botocore.httpchecksum import StreamingChecksumBody

    return isinstance(body, StreamingChecksumBody)


def _check(transfer: Transfer, digest: _Digest, whole: bool) -> str:
    """The part is the object: size, S3's checksum or MD5, the caller's check. Removes a bad part."""
    part = transfer.part
    try:
        size = part.stat().st_size
        if size != transfer.size or digest.size != size:
            raise ArtifactError(f"{transfer.uri} arrived with {size} of {transfer.size} bytes.", "Pull again.")
        if not whole:
            digest.want_md5(part)
            if digest.md5 is not None and digest.md5.hexdigest() != transfer.etag:
                raise ArtifactError(f"{transfer.uri} arrived corrupt (MD5 differs from its ETag).", "Pull again.")
        if transfer.verify is not None:
            transfer.verify(part, whole or digest.md5 is not None)
    except ArtifactError:
        part.unlink(missing_ok=True)
        transfer.marker.unlink(missing_ok=True)
        raise
    return digest.sha.hexdigest()
