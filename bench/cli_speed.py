"""Whole-process speed of the dl CLI, next to a minimal Typer app (completion on) and the aws CLI (v1).

    .venv/bin/python bench/cli_speed.py [--repeat 15] [--runs 10000] [--aws PATH]

Every figure is a fresh process timed from spawn to exit, so interpreter start-up and imports
count. The commands run interleaved (round-robin, rotating the order) after one warm-up each, so
machine noise hits all of them alike. Exit status: 0 all targets pass, 1 a target fails,
2 the aws CLI was unavailable (the result is incomplete). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
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

from benchlib import tool_environment, venv_tool

BENCH = Path(__file__).resolve().parent
AWS_VENV = BENCH / ".venv-aws"
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"
HEAVY = ("torch", "lightning", "pytorch_lightning", "numpy", "boto3", "botocore", "sagemaker")
AWS_HELP = ["sagemaker", "list-training-jobs", "help"]  # aws v1 rejects `--help` (exit 255)
AWS_CASE = "aws " + " ".join(AWS_HELP)
COMPLETE_CASE = "dl show <TAB>"  # bash's completion request for a run id: the 200 newest
COMPLETE_ENV = {"_DL_COMPLETE": "complete_bash", "COMP_WORDS": "dl show ", "COMP_CWORD": "2"}
RESULT = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}
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
        live = i < 4  # the newest few are still running (local, still being submitted: no pid yet)
        target = "local" if live or rng.random() < 0.7 else "sagemaker"
        status = RunStatus.IN_PROGRESS if live else rng.choice(finished)
        created = now - 60 * i - 3600 * 24 * 365 * i / count - rng.uniform(0, 50)
        started = created + rng.uniform(2, 90)
        run_id = f"{job}-{time.strftime('%Y%m%d-%H%M', time.gmtime(created))}-{i:04x}"
        base = f"s3://acme-ml/dl/{run_id}" if target == "sagemaker" else f"{home}/runs/{run_id}"
        metrics = {m: round(rng.uniform(0.01, 1.0), 6) for m in metric_names}
        if live or (status is RunStatus.FAILED and rng.random() < 0.5):
            metrics = {}
        if live:
            state = {}
        elif target == "sagemaker":
            state = {"job_arn": f"arn:aws:sagemaker:eu-west-1:123456789012:training-job/{run_id}"}
        else:
            state = {"pid": rng.randrange(2000, 60000), "pid_created": rng.uniform(1.7e9, 1.8e9)}
        runs.append(
            Run(
                id=run_id,
                job=job,
                target=target,
                status=status,
                params={k: rng.choice(v) for k, v in choices.items()} | {"seed": str(rng.randrange(10))},
                package_hash=f"{rng.getrandbits(256):064x}",
                git_commit=f"{rng.getrandbits(160):040x}",
                git_dirty=rng.random() < 0.2,
                created_at=created,
                started_at=started,
                ended_at=None if live else started + rng.uniform(30, 6 * 3600),
                failure_reason=OOM if status is RunStatus.FAILED else None,
                metrics=metrics,
                data={"train": f"s3://acme-ml/data/{job}/train"},
                job_dir=f"/home/ml/project/trainjobs/{job}",
                log_uri=f"{base}/dl/log.txt",
                checkpoint_uri=f"{base}/checkpoints",
                model_uri=f"{base}/model/model.ckpt",
                output_uri=f"{base}/output",
                backend_state=state,
            )
        )
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
        if not os.access(explicit, os.X_OK):
            return None, f"--aws {explicit} is not executable"
        return explicit, "--aws"
    on_path = shutil.which("aws")
    if on_path:
        return _resolve(on_path), f"PATH ({on_path})"
    return venv_tool(None, AWS_VENV, "awscli", "aws")


def heavy_imports(dl_args: list[str], env: dict) -> list[str]:
    """Which heavy top-level packages a run of `dl ARGS` imported (CLI output discarded)."""
    code = (
        "import contextlib, io, json, sys\n"
        f"sys.argv = ['dl', *{dl_args!r}]\n"
        "from orchestrator.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main()\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_once(argv: list[str], env: dict, capture: bool = False) -> tuple[float, str]:
    """Seconds from spawn to exit. The warm-up (capture) has a timeout; the timed runs must not:
    with one, subprocess polls the child with sleeps of up to 50 ms and the figures come out quantised."""
    out, timeout = (subprocess.PIPE, 120) if capture else (subprocess.DEVNULL, None)
    start = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, timeout=timeout)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        detail = (proc.stderr or b"").decode(errors="replace").strip()[-500:] if capture else ""
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}. {detail}")
    return elapsed, (proc.stdout or b"").decode(errors="replace") if capture else ""


def p90(values: list[float]) -> float:
    return sorted(values)[max(0, math.ceil(0.9 * len(values)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per command (default 15)")
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the store (default 10000)")
    parser.add_argument("--aws", help="an aws (v1) executable to compare with")
    args = parser.parse_args()

    dl = Path(sys.executable).parent / "dl"
    if not dl.exists():
        sys.exit(f"No dl next to {sys.executable}: run with the venv's python (.venv/bin/python).")
    aws, aws_how = find_aws(args.aws)
    home = Path(tempfile.mkdtemp(prefix="dl-bench-"))
    env = tool_environment(drop=("DL_DEBUG",))
    env.update(DL_HOME=str(home), COLUMNS="100", PAGER="cat", MANPAGER="cat", AWS_PAGER="")
    try:
        populate(home, args.runs)
        cases = {
            "dl --help": [str(dl), "--help"],
            "dl runs": [str(dl), "runs"],
            "dl runs --json": [str(dl), "runs", "--json"],
            "dl runs --limit 0": [str(dl), "runs", "--limit", "0"],
            COMPLETE_CASE: [str(dl)],
            "typer app --help": [sys.executable, str(BENCH / "minimal_typer_app.py"), "--help"],
        }
        envs = {COMPLETE_CASE: {**env, **COMPLETE_ENV}}
        if aws:
            cases[AWS_CASE] = [aws, *AWS_HELP]
        for name, argv in list(cases.items()):  # warm-up: caches, .pyc files, and a check that each works
            try:
                _, out = run_once(argv, envs.get(name, env), capture=True)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                if name != AWS_CASE:
                    sys.exit(str(exc))
                aws, aws_how = None, f"{aws} failed its warm-up: {exc}"
                del cases[AWS_CASE]
                continue
            if name == AWS_CASE and "LIST-TRAINING-JOBS" not in out:  # the rendered man page
                sys.exit(f"{AWS_CASE} did not print its help page: {out[:300]!r}")
            if name == "dl runs --limit 0" and len(out.splitlines()) != args.runs + 1:
                sys.exit(f"dl runs --limit 0 printed {len(out.splitlines())} lines, not {args.runs + 1}")
            if name == COMPLETE_CASE and len(out.split()) != min(args.runs, 200):
                sys.exit(f"{COMPLETE_CASE} offered {len(out.split())} run ids, not {min(args.runs, 200)}")
        times: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for i in range(args.repeat):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                times[name].append(run_once(cases[name], envs.get(name, env))[0])
        heavy = {cmd: heavy_imports(cmd.split()[1:], env) for cmd in ("dl --help", "dl runs")}
    finally:
        shutil.rmtree(home, ignore_errors=True)

    print(f"date: {time.strftime('%Y-%m-%d')}  machine: {os.cpu_count()} cores, {platform.platform()}")
    print(f"python: {platform.python_version()} ({sys.executable})  store: {args.runs:,} runs in a temp DL_HOME")
    if aws:
        version = subprocess.run([aws, "--version"], capture_output=True, text=True, env=env)
        aws_how += ": " + (version.stdout or version.stderr).strip()
    print(f"aws: {aws} via {aws_how}" if aws else f"aws: UNAVAILABLE: {aws_how}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"repeat: {args.repeat} timed runs per command, interleaved, after 1 warm-up; load average {load}\n")
    print("| command | median | p90 | min |\n|---|---:|---:|---:|")
    med = {}
    for name, values in times.items():
        med[name] = statistics.median(values)
        print(f"| `{name}` | {med[name]:.3f} s | {p90(values):.3f} s | {min(values):.3f} s |")

    ratio = med["dl --help"] / med["typer app --help"]
    completing = med[COMPLETE_CASE]
    checks = [  # (target, goal, measured, passed)
        ("`dl --help` / typer app `--help` (completion on in both)", "≤ 1.5x", f"{ratio:.2f}x", ratio <= 1.5),
        (f"`dl runs`, {args.runs:,} runs", "< 0.300 s", f"{med['dl runs']:.3f} s", med["dl runs"] < 0.3),
        (f"`{COMPLETE_CASE}`, {args.runs:,} runs", "< 0.300 s", f"{completing:.3f} s", completing < 0.3),
    ]
    ratio = med["dl runs"] / med[AWS_CASE] if aws else 0.0
    checks.append(("`dl runs` / aws help", "< 1x", f"{ratio:.2f}x" if aws else "-", ratio < 1 if aws else None))
    print("\n| target | goal | measured | result |\n|---|---|---:|---|")
    for label, goal, measured, passed in checks:
        print(f"| {label} | {goal} | {measured} | {RESULT[passed]} |")
    failed = False in [passed for *_, passed in checks]
    print()
    found = "; ".join(f"{cmd}: {', '.join(mods)}" for cmd, mods in heavy.items() if mods)
    print(f"heavy imports: {found or 'none'}  (looked for {', '.join(HEAVY)} after `dl --help`, `dl runs`)")
    if failed:
        return 1
    if not aws:
        print(f"\nINCOMPLETE: the aws CLI was not measured: {aws_how}. Try --aws PATH (an aws v1 executable).")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
