"""What the secret scan costs: dl's packaging with it, without it, and `tar czf` of the same folder.

    .venv/bin/python bench/package_speed.py [--repeat 9] [--mb 40] [--folder PATH]

Two job folders: the mnist job as it ships (a few files, what most launches package), and a large
one of real text: the mnist job plus Python sources from this venv's site-packages, copied up to
``--mb`` MB (or ``--folder``, any job folder). Three ways to package each, timed in the same run:

- ``dl``: ``build_package`` as ``dl launch`` calls it (walk, name rules, content scan, tar, gzip -6,
  sha256, write into a fresh cache folder);
- ``dl, no scan``: the same with ``secretscan.scan`` replaced by a function that finds nothing;
- ``tar czf``: GNU tar with gzip's default level 6 (also 6 in dl), one process, the same folder.

dl's two variants run in this process; tar is a subprocess, so its figure includes ~2 ms of spawn.
Round-robin with the order rotated each round, after one warm-up each; median and min. The scan
alone is also timed over the large folder's bytes (MB/s). Exit status 0 (no targets: it reports).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator import packaging, secretscan  # noqa: E402
from orchestrator.jobs import load_job  # noqa: E402

MNIST = REPO / "trainjobs" / "mnist"
DL, NO_SCAN, TAR = "dl", "dl, no scan", "tar czf"


def large_folder(dest: Path, megabytes: float) -> Path:
    """The mnist job plus site-packages' .py files (sorted, so every run copies the same ones)."""
    shutil.copytree(MNIST, dest, ignore=shutil.ignore_patterns("__pycache__"))
    budget = int(megabytes * 1024 * 1024)
    site = Path(sysconfig.get_paths()["purelib"])
    for source in sorted(site.rglob("*.py")):
        if budget <= 0:
            break
        if "__pycache__" in source.parts or not source.is_file() or source.is_symlink():
            continue
        target = dest / "vendored" / source.relative_to(site)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        budget -= target.stat().st_size
    return dest


def folder_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def timed(kind: str, folder: Path, work: Path) -> float:
    cache = Path(tempfile.mkdtemp(dir=work))
    try:
        if kind == TAR:
            start = time.perf_counter()
            subprocess.run(["tar", "czf", str(cache / "out.tar.gz"), "-C", str(folder), "."], check=True)
            return time.perf_counter() - start
        job = load_job(folder)
        real = secretscan.scan
        if kind == NO_SCAN:
            secretscan.scan = lambda data, path: None
        try:
            start = time.perf_counter()
            packaging.build_package(job, cache, max_mb=1000)
            return time.perf_counter() - start
        finally:
            secretscan.scan = real
    finally:
        shutil.rmtree(cache)


def measure(folder: Path, repeat: int, work: Path) -> dict[str, list[float]]:
    kinds = [DL, NO_SCAN, TAR]
    for kind in kinds:
        timed(kind, folder, work)  # warm-up: page cache, imports, compiled patterns
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for round_ in range(repeat):
        order = kinds[round_ % 3 :] + kinds[: round_ % 3]
        for kind in order:
            times[kind].append(timed(kind, folder, work))
    return times


def scan_rate(folder: Path) -> tuple[float, float]:
    blobs = [(str(p), p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]
    total = sum(len(b) for _, b in blobs)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for name, data in blobs:
            secretscan.scan(data, name)
        best = min(best, time.perf_counter() - start)
    return total / 1024 / 1024, best


def report(title: str, folder: Path, times: dict[str, list[float]]) -> None:
    count, size = folder_size(folder)
    print(f"\n{title}: {count} files, {size / 1024 / 1024:.1f} MB")
    print(f"  {'':14s}{'median':>10s}{'min':>10s}{'vs dl, no scan':>16s}{'vs tar czf':>12s}")
    medians = {k: statistics.median(v) for k, v in times.items()}
    for kind, values in times.items():
        vs_plain = medians[kind] / medians[NO_SCAN]
        vs_tar = medians[kind] / medians[TAR]
        print(f"  {kind:14s}{medians[kind] * 1000:8.1f}ms{min(values) * 1000:8.1f}ms{vs_plain:15.2f}x{vs_tar:11.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--mb", type=float, default=40.0, help="Size of the large folder (default 40).")
    parser.add_argument("--folder", type=Path, help="Package this job folder instead of the large one.")
    args = parser.parse_args()
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}, {platform.system()}")
    print(f"tar: {subprocess.run(['tar', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}")
    with tempfile.TemporaryDirectory(prefix="dl-bench-package-") as tmp:
        work = Path(tmp)
        large = args.folder.resolve() if args.folder else large_folder(work / "large", args.mb)
        small = shutil.copytree(MNIST, work / "mnist", ignore=shutil.ignore_patterns("__pycache__"))
        report("mnist job", small, measure(small, args.repeat, work))
        report("large job" if not args.folder else str(large), large, measure(large, args.repeat, work))
        megabytes, seconds = scan_rate(large)
        print(
            f"\nThe scan alone over the large folder: {megabytes:.1f} MB in {seconds:.3f} s,"
            f" {megabytes / seconds:.0f} MB/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
