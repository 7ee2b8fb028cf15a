"""Downloads that survive anything: parallel, resumable, verified, and never half-written.

``download_all`` fetches S3 objects into local files:

- an object already pulled and unchanged (same ETag and size in the folder's manifest, same
  size on disk) is skipped, so a second pull with nothing new costs one listing;
- each object streams into ``.<name>.dlpart`` beside its destination; a pull that is killed
  leaves the part, and the next one continues it with a ranged GET (``If-Match`` the same
  ETag), instead of starting over;
- a connection that drops mid-object is retried from the byte it reached;
- a finished object is checked (size; MD5 for single-part ETags; the caller's own check, e.g.
  that a checkpoint is a sound zip) before it is renamed into place, and its sha256 goes
  into the manifest (``.dl-pull.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import ArtifactError

MANIFEST = ".dl-pull.json"
CHUNK = 1024 * 1024
ATTEMPTS = 6


@dataclass
class Transfer:
    bucket: str
    key: str
    size: int
    etag: str
    dest: Path
    verify: Callable[[Path], None] | None = None

    @property
    def part(self) -> Path:
        return self.dest.with_name(f".{self.dest.name}.dlpart")


@dataclass
class Report:
    fetched: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    bytes: int = 0
    resumed_bytes: int = 0


class Progress:
    """Bytes, rate and ETA on one line of stderr (only on a terminal)."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._shown = 0.0
        self._lock = threading.Lock()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def add(self, amount: int) -> None:
        with self._lock:
            self.done += amount
            now = time.monotonic()
            if self.enabled and (now - self._shown > 0.1 or self.done >= self.total):
                self._shown = now
                sys.stderr.write("\r" + self.line() + " " * 4)
                sys.stderr.flush()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return f"  {_mb(self.done)} / {_mb(self.total)}  {_mb(rate)}/s  ETA {eta:.0f}s"

    def close(self) -> None:
        if self.enabled and self.total:
            sys.stderr.write("\n")


def _mb(num: float) -> str:
    return f"{num / 1024 / 1024:.1f} MB"


def load_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def save_manifest(folder: Path, manifest: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{MANIFEST}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / MANIFEST)


def unchanged(transfer: Transfer, manifest: dict, root: Path) -> bool:
    entry = manifest.get(str(transfer.dest.relative_to(root)))
    return bool(
        entry
        and entry.get("etag") == transfer.etag
        and entry.get("size") == transfer.size
        and transfer.dest.is_file()
        and transfer.dest.stat().st_size == transfer.size
    )


def download_all(client, transfers: list[Transfer], root: Path, *, workers: int = 8, progress=None) -> Report:
    """Fetch ``transfers`` (destinations under ``root``) with ``client`` (a boto3 S3 client)."""
    manifest = load_manifest(root)
    report = Report()
    todo = []
    for transfer in transfers:
        if unchanged(transfer, manifest, root):
            report.skipped.append(transfer.dest)
        else:
            todo.append(transfer)
    progress = progress or Progress(sum(t.size for t in todo))
    lock = threading.Lock()

    def one(transfer: Transfer) -> None:
        resumed, digest = _fetch(client, transfer, progress)
        with lock:
            manifest[str(transfer.dest.relative_to(root))] = {
                "key": f"s3://{transfer.bucket}/{transfer.key}",
                "etag": transfer.etag,
                "size": transfer.size,
                "sha256": digest,
                "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            save_manifest(root, manifest)
            report.fetched.append(transfer.dest)
            report.bytes += transfer.size - resumed
            report.resumed_bytes += resumed

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo) or 1))) as pool:
            for future in [pool.submit(one, t) for t in todo]:
                future.result()
    finally:
        progress.close()
    return report


def _fetch(client, transfer: Transfer, progress: Progress) -> tuple[int, str]:
    """Stream one object into its part file, continuing a previous part; return (bytes resumed, sha256)."""
    transfer.dest.parent.mkdir(parents=True, exist_ok=True)
    part, marker = transfer.part, transfer.part.with_suffix(".etag")
    if part.exists() and (not marker.is_file() or marker.read_text() != transfer.etag):
        part.unlink()  # a part of another version of the object
    if part.exists() and part.stat().st_size > transfer.size:
        part.unlink()
    marker.write_text(transfer.etag)
    resumed = part.stat().st_size if part.exists() else 0
    progress.add(resumed)
    attempt = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if offset >= transfer.size:
            break
        try:
            _stream(client, transfer, part, offset, progress)
        except Exception as exc:  # a dropped connection, a 5xx after botocore's retries
            attempt += 1
            if _code(exc) in ("PreconditionFailed", "412"):
                part.unlink(missing_ok=True)
                raise ArtifactError(
                    f"s3://{transfer.bucket}/{transfer.key} changed during the pull.", "Pull again."
                ) from None
            if attempt >= ATTEMPTS:
                raise ArtifactError(
                    f"Downloading s3://{transfer.bucket}/{transfer.key} kept failing ({type(exc).__name__}: {exc}).",
                    "Run the same pull again: it continues where it stopped.",
                ) from None
            time.sleep(min(0.2 * 2**attempt, 5.0))
    digest = _check(transfer, part)
    os.replace(part, transfer.dest)
    marker.unlink(missing_ok=True)
    return resumed, digest


def _stream(client, transfer: Transfer, part: Path, offset: int, progress: Progress) -> None:
    kwargs = {"Bucket": transfer.bucket, "Key": transfer.key, "IfMatch": f'"{transfer.etag}"'}
    if offset:
        kwargs["Range"] = f"bytes={offset}-"
    body = client.get_object(**kwargs)["Body"]
    with open(part, "ab") as out:
        for chunk in iter(lambda: body.read(CHUNK), b""):
            out.write(chunk)
            progress.add(len(chunk))
        out.flush()
        os.fsync(out.fileno())


def _check(transfer: Transfer, part: Path) -> str:
    size = part.stat().st_size
    if size != transfer.size:
        part.unlink()
        raise ArtifactError(f"s3://{transfer.bucket}/{transfer.key} arrived with {size} of {transfer.size} bytes.")
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(part, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            sha.update(block)
            md5.update(block)
    if "-" not in transfer.etag and len(transfer.etag) == 32 and md5.hexdigest() != transfer.etag:
        part.unlink()
        raise ArtifactError(f"s3://{transfer.bucket}/{transfer.key} arrived corrupt (MD5 differs from its ETag).")
    if transfer.verify is not None:
        try:
            transfer.verify(part)
        except ArtifactError:
            part.unlink()
            raise
    return sha.hexdigest()


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
