"""Whole-process speed of the dl CLI, next to a minimal Typer app and the aws CLI (v1).

    .venv/bin/python bench/cli_speed.py [--repeat 15] [--runs 10000] [--aws PATH]

Every figure is a fresh process timed from spawn to exit, so interpreter start-up and imports
count. The commands run interleaved (round-robin, rotating the order) after one warm-up each, so
machine noise hits all of them alike. Exit status: 0 all targets pass, 1 a target fails,
2 the aws CLI was unavailable (the result is incomplete). See bench/README.md.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
AWS_VENV = BENCH / ".venv-aws"
HEAVY = ("torch", "lightning", "pytorch_lightning", "numpy", "boto3", "botocore", "sagemaker")
AWS_HELP = ["sagemaker", "list-training-jobs", "help"]  # aws v1 rejects `--help` (exit 255)
AWS_CASE = "aws " + " ".join(AWS_HELP)
JOBS = {  # job -> (params, metric names)
    "mnist": ({"lr": ["0.001", "0.01"], "batch_size": ["64", "128"], "max_epochs": ["5", "10"]},
              ["val_loss", "val_acc", "train_loss"]),
    "cifar10-resnet18": ({"lr": ["0.1", "0.05"], "weight_decay": ["5e-4"], "max_epochs": ["30", "90"]},
                         ["val_loss", "val_acc", "val_top5", "train_loss"]),
    "bert-sst2": ({"lr": ["2e-5", "3e-5"], "warmup_steps": ["500"], "max_seq_len": ["128", "256"]},
                  ["val_loss", "val_f1", "train_loss"]),
    "unet-segmentation": ({"lr": ["3e-4"], "image_size": ["256", "512"], "precision": ["16-mixed"]},
                          ["val_dice", "val_iou", "train_loss"]),
    "tabular-mlp": ({"hidden": ["256", "512"], "dropout": ["0.1", "0.3"], "max_epochs": ["20"]},
                    ["val_rmse", "train_rmse"]),
}  # fmt: skip


def populate(home: Path, count: int) -> None:
    """``count`` realistic runs over the last year: mostly terminal, a few InProgress without a pid."""
    from orchestrator.store import Run, RunStatus, Store

    rng, now = random.Random(2026), time.time()
    finished = [RunStatus.COMPLETED] * 80 + [RunStatus.FAILED] * 15 + [RunStatus.STOPPED] * 5
    runs = []
    for i in range(count):
        job = rng.choice(list(JOBS))
        choices, metric_names = JOBS[job]
        target = "sagemaker" if rng.random() < 0.3 else "local"
        live = i < 4  # the newest few are still running (local, still being submitted: no pid yet)
        status = RunStatus.IN_PROGRESS if live else rng.choice(finished)
        if live:
            target = "local"
        created = now - 60 * i - 3600 * 24 * 365 * i / count - rng.uniform(0, 50)
        started = created + rng.uniform(2, 90)
        ended = None if live else started + rng.uniform(30, 6 * 3600)
        stamp = time.strftime("%Y%m%d-%H%M", time.gmtime(created))
        run_id = f"{job}-{stamp}-{i:04x}"
        base = f"s3://acme-ml/dl/{run_id}" if target == "sagemaker" else f"{home}/runs/{run_id}"
        metrics = {} if live else {m: round(rng.uniform(0.01, 1.0), 6) for m in metric_names}
        if status is RunStatus.FAILED and rng.random() < 0.5:
            metrics = {}
        runs.append(Run(
            id=run_id, job=job, target=target, status=status,
            params={k: rng.choice(v) for k, v in choices.items()} | {"seed": str(rng.randrange(10))},
            package_hash=f"{rng.getrandbits(256):064x}", git_commit=f"{rng.getrandbits(160):040x}",
            git_dirty=rng.random() < 0.2, created_at=created, started_at=started, ended_at=ended,
            failure_reason="CUDA out of memory. Tried to allocate 2.00 GiB" if status is RunStatus.FAILED else None,
            metrics=metrics, data={"train": f"s3://acme-ml/data/{job}/train"},
            job_dir=f"/home/ml/project/trainjobs/{job}", log_uri=f"{base}/dl/log.txt",
            checkpoint_uri=f"{base}/checkpoints", model_uri=f"{base}/model/model.ckpt",
            output_uri=f"{base}/output",
            backend_state={} if live else ({"job_arn": f"arn:aws:sagemaker:eu-west-1:123456789012:"
                                                      f"training-job/{run_id}"} if target == "sagemaker"
                                           else {"pid": rng.randrange(2000, 60000), "pid_start": 1}),
        ))  # fmt: skip
    store = Store(home)
    store.insert_many(runs)
    assert store.count() == count, store.count()
    store.close()


def _resolve(path: str) -> str:
    """A pyenv shim is a bash script; time the real executable instead of the shim."""
    if "/shims/" in path and shutil.which("pyenv"):
        real = subprocess.run(["pyenv", "which", Path(path).name], capture_output=True, text=True)
        if real.returncode == 0 and real.stdout.strip():
            return real.stdout.strip()
    return path


def find_aws(explicit: str | None) -> tuple[str | None, str]:
    """(aws executable or None, how it was found or why there is none)."""
    if explicit:
        return (explicit, "--aws") if os.access(explicit, os.X_OK) else (None, f"--aws {explicit} is not executable")
    on_path = shutil.which("aws")
    if on_path:
        return _resolve(on_path), f"PATH ({on_path})"
    aws = AWS_VENV / "bin" / "aws"
    if not aws.exists():
        print(f"installing awscli into {AWS_VENV} ...", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(AWS_VENV)], check=True, timeout=300)
            subprocess.run([str(AWS_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "awscli"],
                           check=True, timeout=900)  # fmt: skip
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"could not install awscli into {AWS_VENV}: {exc}"
    return str(aws), f"bench venv ({AWS_VENV})"


def heavy_imports(dl_args: list[str], env: dict) -> list[str]:
    """Which heavy top-level packages a run of `dl ARGS` imported (CLI output discarded)."""
    code = (
        "import contextlib, io, sys\n"
        f"sys.argv = ['dl', *{dl_args!r}]\n"
        "from orchestrator.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main()\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return eval(out.stdout.strip().splitlines()[-1])  # a list literal we printed ourselves


def run_once(argv: list[str], env: dict, capture: bool = False) -> tuple[float, str]:
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    start = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, timeout=120)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        detail = (proc.stderr or b"").decode(errors="replace").strip()[-500:] if capture else ""
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}. {detail}")
    return elapsed, (proc.stdout or b"").decode(errors="replace") if capture else ""


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per command (default 15)")
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the throw-away store (default 10000)")
    parser.add_argument("--aws", help="an aws (v1) executable to compare with")
    args = parser.parse_args()

    dl = Path(sys.executable).parent / "dl"
    if not dl.exists():
        sys.exit(f"No dl next to {sys.executable}: run with the venv's python (.venv/bin/python).")
    aws, aws_how = find_aws(args.aws)
    home = Path(tempfile.mkdtemp(prefix="dl-bench-"))
    env = {k: v for k, v in os.environ.items() if k != "DL_DEBUG"}
    env.update(DL_HOME=str(home), COLUMNS="100", PAGER="cat", MANPAGER="cat", AWS_PAGER="")
    try:
        started = time.perf_counter()
        populate(home, args.runs)
        print(f"store: {args.runs} runs in {home} ({time.perf_counter() - started:.1f} s to write)")
        cases = {
            "dl --help": [str(dl), "--help"],
            "dl runs": [str(dl), "runs"],
            "dl runs --json": [str(dl), "runs", "--json"],
            "dl runs --limit 0": [str(dl), "runs", "--limit", "0"],
            "typer app --help": [sys.executable, str(BENCH / "minimal_typer_app.py"), "--help"],
        }
        if aws:
            cases[AWS_CASE] = [aws, *AWS_HELP]
        for name, argv in cases.items():  # warm-up: caches, .pyc files, and a check that each works
            _, out = run_once(argv, env, capture=True)
            if name == "dl runs --limit 0" and len(out.splitlines()) != args.runs + 1:
                sys.exit(f"dl runs --limit 0 printed {len(out.splitlines())} lines, not {args.runs + 1}")
        times: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for i in range(args.repeat):
            for name in names[i % len(names):] + names[: i % len(names)]:
                times[name].append(run_once(cases[name], env)[0])
        heavy = {cmd: heavy_imports(cmd.split()[1:], env) for cmd in ("dl --help", "dl runs")}
    finally:
        shutil.rmtree(home, ignore_errors=True)

    aws_version = "n/a"
    if aws:
        done = subprocess.run([aws, "--version"], capture_output=True, text=True, env=env)
        aws_version = (done.stdout or done.stderr).strip()
    print(f"date: {time.strftime('%Y-%m-%d')}  machine: {os.cpu_count()} cores, {platform.machine()}, "
          f"{platform.system()} {platform.release()}  python: {platform.python_version()} ({sys.executable})")
    print(f"aws: {aws or 'UNAVAILABLE'} via {aws_how}; {aws_version}")
    print(f"repeat: {args.repeat} timed runs per command, interleaved, after 1 warm-up\n")
    print("| command | median | p90 | min |\n|---|---:|---:|---:|")
    med = {}
    for name, values in times.items():
        med[name] = statistics.median(values)
        print(f"| `{name}` | {med[name]:.3f} s | {p90(values):.3f} s | {min(values):.3f} s |")

    checks = [("`dl --help` / typer app `--help`", "≤ 1.5x",
               med["dl --help"] / med["typer app --help"], "x", lambda r: r <= 1.5),
              ("`dl runs` median, 10,000 runs", "< 0.300 s", med["dl runs"], " s", lambda t: t < 0.3)]
    if aws:
        checks.append(("`dl runs` / aws help", "< 1", med["dl runs"] / med[AWS_CASE], "x", lambda r: r < 1))
    print("\n| target | goal | measured | result |\n|---|---|---:|---|")
    failed = 0
    for label, goal, value, unit, ok in checks:
        failed += not ok(value)
        print(f"| {label} | {goal} | {value:.3f}{unit} | {'PASS' if ok(value) else 'FAIL'} |")
    if not aws:
        print("| `dl runs` / aws help | < 1 | - | NOT MEASURED |")
    print()
    for cmd, found in heavy.items():
        print(f"heavy imports ({cmd}): {', '.join(found) or 'none'}")
    if failed:
        return 1
    if not aws:
        print(f"\nINCOMPLETE: the aws CLI was not measured: {aws_how}. Pass --aws PATH to an aws v1 executable.")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
