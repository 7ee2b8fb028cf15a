"""Throughput of `dl pull` next to `aws s3 sync` (awscli v1) and `s5cmd cp`, against moto on 127.0.0.1.

    .venv/bin/python bench/pull_speed.py [--repeat 3] [--large 8] [--small 200] [--aws PATH] [--s5cmd PATH]

A moto server started here holds a checkpoint-like set: ``--large`` checkpoints of 64 MiB
(random bytes in a stored zip entry, uploaded once and copied server-side) and ``--small``
checkpoints of 100 KiB (each its own zip). A SageMaker run whose checkpoints are that prefix
is put into a throw-away DL_HOME (moto cannot run the job itself), and `dl pull RUN --all`
pulls it, verifying every file as it does for users (size, S3's CRC32 or else the ETag's MD5,
each ``.ckpt`` as a zip, the sha256 into the manifest). Each measurement is a whole process
pulling into a fresh empty folder; the tools take turns, each round in another of their six
orders, so each runs after each other one equally often. Then `dl pull` runs again into a
folder it filled, with nothing changed. Exit status: 0 every target passes, 1 a target fails,
2 a tool was unavailable (the result is incomplete). See bench/README.md.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from benchlib import start_moto, tool_environment, venv_tool

BENCH = Path(__file__).resolve().parent
AWS_VENV = BENCH / ".venv-aws"
S5CMD_VENV = BENCH / ".venv-s5cmd"
BUCKET = "dl-bench"
REGION = "us-east-1"
RUN_ID = "mnist-20261125-1200-b3c4"
PREFIX = f"dl/runs/{RUN_ID}/checkpoints"
MiB = 1024 * 1024
RESULT = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}
TOOLS = ("dl pull", "aws s3 sync", "s5cmd cp")


def checkpoint(size: int, rng: random.Random) -> bytes:
    """A zip (as torch.save writes one) holding ``size`` random bytes in one stored entry."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data/0", rng.randbytes(size))
        archive.writestr("archive/version", b"3\n")
    return buffer.getvalue()


def populate(client, large: int, small: int) -> dict[str, int]:
    """Upload the object set; returns name -> size."""
    rng = random.Random(2026)
    client.create_bucket(Bucket=BUCKET)
    sizes = {}
    big = checkpoint(64 * MiB - 256, rng)  # 64 MiB with the zip's own headers
    for i in range(large):
        key = f"{PREFIX}/epoch={i:02d}-large.ckpt"
        if i == 0:
            client.put_object(Bucket=BUCKET, Key=key, Body=big)
        else:  # server-side: the same bytes without sending them again
            first = {"Bucket": BUCKET, "Key": f"{PREFIX}/epoch=00-large.ckpt"}
            client.copy_object(Bucket=BUCKET, Key=key, CopySource=first)
        sizes[key.rsplit("/", 1)[1]] = len(big)
    for i in range(small):
        body = checkpoint(100 * 1024 - 256, rng)
        key = f"{PREFIX}/step={i:04d}.ckpt"
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
        sizes[key.rsplit("/", 1)[1]] = len(body)
    return sizes


def record_run(home: Path) -> None:
    """A finished SageMaker run whose checkpoints are the bench prefix (moto cannot run the job)."""
    from orchestrator.store import Run, RunStatus, Store

    now = time.time()
    store = Store(home)
    store.insert(
        Run(
            id=RUN_ID,
            job="mnist",
            target="sagemaker",
            status=RunStatus.COMPLETED,
            created_at=now - 600,
            started_at=now - 590,
            ended_at=now - 10,
            checkpoint_uri=f"s3://{BUCKET}/{PREFIX}",
            backend_state={"region": REGION},
        )
    )
    store.close()


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of the finished children (pid None) or of a running process."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")  # not Linux: the server's share is not reported
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], env: dict, server: int) -> tuple[float, float, float]:
    """(seconds from spawn to exit, the tool's CPU seconds, the S3 server's CPU seconds meanwhile).

    No timeout: with one, subprocess polls the child with sleeps and the figures come out rounded."""
    cpu, server_cpu, start = cpu_seconds(), cpu_seconds(server), time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-800:]}")
    return elapsed, cpu_seconds() - cpu, cpu_seconds(server) - server_cpu


def check_folder(folder: Path, sizes: dict[str, int]) -> None:
    """Every object arrived whole (by name and size) and nothing else is left (no part files)."""
    found = {p.name: p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != ".dl-pull.json"}
    if found != sizes:
        missing = sorted(set(sizes) - set(found))[:3]
        extra = sorted(set(found) - set(sizes))[:3]
        wrong = sorted(n for n in set(sizes) & set(found) if sizes[n] != found[n])[:3]
        raise RuntimeError(f"{folder}: missing {missing}, unexpected {extra}, wrong size {wrong}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=6, help="timed pulls per tool (default 6: every order once)")
    parser.add_argument("--large", type=int, default=8, help="64 MiB checkpoints (default 8)")
    parser.add_argument("--small", type=int, default=200, help="100 KiB checkpoints (default 200)")
    parser.add_argument("--aws", help="an aws (v1) executable")
    parser.add_argument("--s5cmd", help="an s5cmd executable")
    parser.add_argument(
        "--also-dl", metavar="CHECKOUT", help="also time `dl pull` from another checkout (its PYTHONPATH), same rounds"
    )
    args = parser.parse_args()

    dl = Path(sys.executable).parent / "dl"
    if not dl.exists():
        sys.exit(f"No dl next to {sys.executable}: run with the venv's python (.venv/bin/python).")
    aws, aws_how = venv_tool(args.aws, AWS_VENV, "awscli", "aws")
    s5cmd, s5cmd_how = venv_tool(args.s5cmd, S5CMD_VENV, "s5cmd", "s5cmd")
    work = Path(tempfile.mkdtemp(prefix="dl-pull-bench-"))
    moto, url = start_moto()
    env = tool_environment(drop=("AWS_", "DL_"))
    env.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL=url, AWS_CONFIG_FILE=str(work / "none"), AWS_SHARED_CREDENTIALS_FILE=str(work / "none"),
        AWS_PAGER="", DL_HOME=str(work / "dl-home"), DL_REGION=REGION,
    )  # fmt: skip
    os.environ.update(env)
    try:
        import boto3

        client = boto3.session.Session(region_name=REGION).client("s3", endpoint_url=url)
        started = time.perf_counter()
        sizes = populate(client, args.large, args.small)
        total = sum(sizes.values())
        took = time.perf_counter() - started
        print(f"object set: {len(sizes)} objects, {total / MiB:.1f} MiB, uploaded in {took:.1f} s", flush=True)
        record_run(work / "dl-home")
        source = f"s3://{BUCKET}/{PREFIX}/"
        commands = {
            "dl pull": lambda dest: [str(dl), "pull", RUN_ID, "--all", "--to", str(dest)],
            "aws s3 sync": lambda dest: [aws, "s3", "sync", source, str(dest), "--endpoint-url", url,
                                         "--only-show-errors"],
            "s5cmd cp": lambda dest: [s5cmd, "--endpoint-url", url, "cp", f"{source}*", f"{dest}/"],
        }  # fmt: skip
        tools = [t for t in TOOLS if t == "dl pull" or (aws if t == "aws s3 sync" else s5cmd)]
        envs = dict.fromkeys(tools, env)
        if args.also_dl:  # the same dl executable, importing orchestrator from the other checkout
            other = f"dl pull ({Path(args.also_dl).name})"
            tools.append(other)
            commands[other] = commands["dl pull"]
            envs[other] = env | {"PYTHONPATH": str(Path(args.also_dl).resolve())}
        runs: dict[str, list[tuple[float, float, float]]] = {t: [] for t in tools}
        count, keep = 0, None
        # Every order of the tools in turn, so that each runs after each other one equally often: what
        # a tool leaves behind (aws s3 sync's ranged GETs make moto read 4 GiB; memory freed just
        # before) changes the next pull's time, and a rotation would always put the same tool after it.
        orders = list(itertools.permutations(tools))
        for i in range(args.repeat + 1):  # round 0 is the warm-up (page cache, .pyc files), not counted
            for tool in orders[i % len(orders)]:
                count += 1
                dest = work / f"pull-{count}"
                measured = timed(commands[tool](dest), envs[tool], moto.pid)
                check_folder(dest / "checkpoints" if tool.startswith("dl pull") else dest, sizes)
                if i:
                    runs[tool].append(measured)
                if tool == "dl pull" and i == args.repeat:
                    keep = dest  # for the no-change re-pull
                else:
                    shutil.rmtree(dest)
        again = [timed(commands["dl pull"](keep), env, moto.pid)[0] for _ in range(max(args.repeat, 5))]
        check_folder(keep / "checkpoints", sizes)
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    print(f"date: {time.strftime('%Y-%m-%d')}  machine: {os.cpu_count()} cores, {platform.platform()}")
    print(f"python: {platform.python_version()} ({sys.executable})")
    for name, exe, how in (("aws", aws, aws_how), ("s5cmd", s5cmd, s5cmd_how)):
        if exe:
            version = subprocess.run([exe, "--version" if name == "aws" else "version"], capture_output=True, text=True)
            print(f"{name}: {exe} via {how}: {(version.stdout or version.stderr).strip()}")
        else:
            print(f"{name}: UNAVAILABLE: {how}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"repeat: {args.repeat} timed pulls per tool, interleaved, after 1 warm-up round; load average {load}\n")
    print("| tool | median | min | max | median throughput | tool CPU | server CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    med = {}
    for tool, measured in runs.items():
        times = [m[0] for m in measured]
        med[tool] = statistics.median(times)
        cpu, server = (statistics.median(m[k] for m in measured) for k in (1, 2))
        print(
            f"| `{tool}` | {med[tool]:.2f} s | {min(times):.2f} s | {max(times):.2f} s "
            f"| {total / MiB / med[tool]:.0f} MiB/s | {cpu:.2f} s | {server:.2f} s |"
        )
    repull = statistics.median(again)
    print(f"| `dl pull`, nothing changed | {repull:.3f} s | {min(again):.3f} s | {max(again):.3f} s | - | | |")

    checks = []  # (target, goal, measured, passed)
    for tool, goal in (("aws s3 sync", 1.8), ("s5cmd cp", 0.85)):
        if tool in med:
            ratio = med[tool] / med["dl pull"]  # throughput ratio: dl's rate over the tool's
            checks.append((f"`dl pull` / `{tool}` throughput", f">= {goal}x", f"{ratio:.2f}x", ratio >= goal))
        else:
            checks.append((f"`dl pull` / `{tool}` throughput", f">= {goal}x", "-", None))
    checks.append(("`dl pull` again, nothing changed", "< 0.5 s", f"{repull:.3f} s", repull < 0.5))
    print("\n| target | goal | measured | result |\n|---|---|---:|---|")
    for label, goal, measured, passed in checks:
        print(f"| {label} | {goal} | {measured} | {RESULT[passed]} |")
    if False in [passed for *_, passed in checks]:
        return 1
    return 2 if None in [passed for *_, passed in checks] else 0


if __name__ == "__main__":
    sys.exit(main())
