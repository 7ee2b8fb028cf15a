"""Whole-process time of `dl launch mnist --target sagemaker --gpu T4` against a moto server, next to
the same submission made by a minimal boto3 script and by the SageMaker SDK's ModelTrainer (v3).

    .venv/bin/python bench/launch_speed.py [--repeat 9] [--sdk-python PATH]

One moto server (started here, stopped at the end) serves all submitters. dl's warm-up launch
uploads its package and fills the image-URI cache; the timed launches each create a new training
job and must not upload again. Timed runs go round-robin, rotating the order, after one warm-up
each; one more, untimed launch each goes through a counting proxy to list the HTTP calls made.
Exit status: 0 all targets pass, 1 a target fails, 2 ModelTrainer could not be measured.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchlib import start_moto, tool_environment
from cli_speed import RESULT, p90, run_once
from http_count import CountingProxy

BENCH = Path(__file__).resolve().parent
SDK_VENV = BENCH / ".venv-sdk"
BUCKET, ROLE, REGION = "dl-bench", "dl-bench-sagemaker", "us-east-1"
DL, BOTO3, SDK, SDK_OFF = "dl launch", "boto3 script", "ModelTrainer", "ModelTrainer, TelemetryOptOut"
LAUNCH = ["launch", "mnist", "--target", "sagemaker", "--gpu", "T4"]
TELEMETRY_OFF = 'SchemaVersion: "1.0"\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n'
JOB_NAMES = {DL: r"mnist-\d{8}-\d{4}-[0-9a-f]{4}", BOTO3: r"mnist-boto3-.*", SDK: r"mnist-sdk-.*"}


def find_sdk(explicit: str | None) -> tuple[str | None, str]:
    """(python with `sagemaker` 3.x, how it was found) or (None, why not); installs bench/.venv-sdk."""
    python = explicit or str(SDK_VENV / "bin" / "python")
    if not explicit and not Path(python).exists():
        print(f"installing sagemaker 3.x into {SDK_VENV} (about 1 GB) ...", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(SDK_VENV)], check=True, timeout=300)
            subprocess.run([python, "-m", "pip", "install", "-q", "sagemaker>=3,<4"], check=True, timeout=1800)
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"could not install sagemaker into {SDK_VENV}: {exc}"
    code = "import importlib.metadata as m; print(m.version('sagemaker'))"
    try:
        version = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    except OSError as exc:
        return None, f"{python}: {exc}"
    if not version.startswith("3."):
        return None, f"{python} has no sagemaker 3.x (found {version or 'none'})"
    return python, f"sagemaker {version} ({python})"


def aws_env(tmp: Path, endpoint: str) -> dict:
    """This environment without AWS_*, DL_*, SAGEMAKER_*, plus dummy credentials for moto."""
    drop = ("AWS_", "DL_", "SAGEMAKER_")
    env = tool_environment(drop)
    for name in ("aws-config", "aws-credentials"):
        (tmp / name).write_text("")
    (tmp / "xdg").mkdir()  # no SageMaker SDK config from this machine (~/.config/sagemaker, /etc/xdg)
    env.update(
        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE=str(tmp / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "aws-credentials"), XDG_CONFIG_HOME=str(tmp / "xdg"),
        XDG_CONFIG_DIRS=str(tmp / "xdg"), DL_HOME=str(tmp / "home"), DL_BUCKET=BUCKET, DL_REGION=REGION,
        SAGEMAKER_VALIDATE_ROLE="false",
    )  # fmt: skip
    return env


def _client(env: dict, service: str):
    import boto3

    keys = {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}
    return boto3.session.Session(region_name=REGION, **keys).client(service, endpoint_url=env["AWS_ENDPOINT_URL"])


def make_bucket_and_role(env: dict) -> str:
    _client(env, "s3").create_bucket(Bucket=BUCKET)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"Service": "sagemaker.amazonaws.com"}}]}  # fmt: skip
    return _client(env, "iam").create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def job_counts(env: dict) -> dict[str, int]:
    pages = _client(env, "sagemaker").get_paginator("list_training_jobs").paginate()
    names = [s["TrainingJobName"] for page in pages for s in page["TrainingJobSummaries"]]
    return {who: sum(bool(re.fullmatch(pattern, n)) for n in names) for who, pattern in JOB_NAMES.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="timed launches per submitter (default 9)")
    parser.add_argument("--sdk-python", help="a python with sagemaker 3.x (default: bench/.venv-sdk, installed)")
    args = parser.parse_args()
    dl = Path(sys.executable).parent / "dl"
    if not dl.exists():
        sys.exit(f"No dl next to {sys.executable}: run with the venv's python (.venv/bin/python).")
    sdk_python, sdk_how = find_sdk(args.sdk_python)

    tmp = Path(tempfile.mkdtemp(prefix="dl-launch-bench-"))
    moto, endpoint = start_moto(tmp / "moto.log")
    here = Path.cwd()
    try:
        env = aws_env(tmp, endpoint)
        env["DL_ROLE_ARN"] = make_bucket_and_role(env)
        (tmp / "cwd").mkdir()
        os.chdir(tmp / "cwd")  # no dl.toml; the job comes from the checkout's trainjobs/
        proxy = CountingProxy(endpoint)  # counts the untimed launches: the warm-ups and one more each
        _, out = run_once([str(dl), *LAUNCH, "--json"], dict(env, AWS_ENDPOINT_URL=proxy.url), capture=True)
        warm, first = json.loads(out), proxy.take()  # it uploaded the package and filled the image-URI cache
        _, out = run_once([str(dl), *LAUNCH, "--dry-run", "--json", "--no-smoke-test"], env, capture=True)
        plan = json.loads(out)
        if plan["package"]["sha256"] != warm["package_hash"]:
            sys.exit("The package changed between the warm-up and the dry run; is the tree being edited?")
        (tmp / "plan.json").write_text(json.dumps(plan))
        with tarfile.open(plan["package"]["path"]) as tar:
            tar.extractall(tmp / "source", filter="data")
        sdk_env = dict(env)
        (tmp / "sagemaker-config.yaml").write_text(TELEMETRY_OFF)
        sdk_off_env = dict(env, SAGEMAKER_USER_CONFIG_OVERRIDE=str(tmp / "sagemaker-config.yaml"))
        cases = {
            DL: ([str(dl), *LAUNCH, "--json"], env),
            BOTO3: ([sys.executable, str(BENCH / "boto3_launch.py"), str(tmp / "plan.json"), plan["package"]["path"]],
                    env),
        }  # fmt: skip
        if sdk_python:
            sdk_argv = [sdk_python, str(BENCH / "sdk_launch.py"), str(tmp / "plan.json"), str(tmp / "source")]
            cases |= {SDK: (sdk_argv, sdk_env), SDK_OFF: (sdk_argv, sdk_off_env)}
        for name, (argv, case_env) in list(cases.items()):  # warm-up (and the dl one is done already)
            if name == DL:
                continue
            try:
                run_once(argv, dict(case_env, AWS_ENDPOINT_URL=proxy.url), capture=True)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                if name == BOTO3:
                    sys.exit(str(exc))
                sdk_how += f"; {name} failed its warm-up: {exc}"
                cases.pop(name)
        times: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for i in range(args.repeat):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                times[name].append(run_once(*cases[name])[0])
        proxy.take()
        calls = {}
        for name, (argv, case_env) in cases.items():
            run_once(argv, dict(case_env, AWS_ENDPOINT_URL=proxy.url), capture=True)
            calls[name] = proxy.take()
        proxy.shutdown()
        jobs = job_counts(env)
        time.sleep(0.5)  # let moto write its last log lines
        uploads = len(re.findall(rf'"PUT /{BUCKET}/dl/packages/\S+ HTTP', (tmp / "moto.log").read_text()))
    finally:
        os.chdir(here)
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)

    report(args, cases, times, calls, jobs, uploads, warm, sdk_how)
    print(f"dl's first launch (the warm-up): {_calls(first)}")
    if uploads > 1:
        print("dl uploaded its package again: the package changed during the run (was the tree being edited?)")
    med = {name: statistics.median(values) for name, values in times.items()}
    sdk_best = min((med[n] for n in (SDK, SDK_OFF) if n in med), default=None)  # the SDK's best case
    checks = [  # (target, goal, measured, passed)
        ("`dl launch` / boto3 script", "≤ 2x", f"{med[DL] / med[BOTO3]:.2f}x", med[DL] / med[BOTO3] <= 2),
        ("ModelTrainer (faster variant) / `dl launch`", "≥ 3x", f"{sdk_best / med[DL]:.2f}x" if sdk_best else "-",
         sdk_best / med[DL] >= 3 if sdk_best else None),
        ("package uploads by dl after its warm-up", "0", str(uploads - 1), uploads == 1),
    ]  # fmt: skip
    print("\n| target | goal | measured | result |\n|---|---|---:|---|")
    for label, goal, measured, passed in checks:
        print(f"| {label} | {goal} | {measured} | {RESULT[passed]} |")
    if False in [passed for *_, passed in checks]:
        return 1
    if not sdk_best:
        print(f"\nINCOMPLETE: ModelTrainer was not measured: {sdk_how}. Try --sdk-python PATH.")
        return 2
    return 0


def report(args, cases, times, calls, jobs, uploads, warm, sdk_how) -> None:
    git = subprocess.run(["git", "-C", str(BENCH), "describe", "--always", "--dirty"], capture_output=True, text=True)
    print(f"date: {time.strftime('%Y-%m-%d')}  machine: {os.cpu_count()} cores, {platform.platform()}")
    print(f"python: {platform.python_version()}  dl: {git.stdout.strip()}, package {warm['package_hash'][:12]}")
    versions = ", ".join(f"{m} {_version(m)}" for m in ("boto3", "botocore", "moto"))
    print(f"{versions}; ModelTrainer: {sdk_how}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"repeat: {args.repeat} timed launches each, interleaved, after 1 warm-up; load average {load}\n")
    print("| submitter | median | p90 | min | / dl | HTTP requests |\n|---|---:|---:|---:|---:|---:|")
    dl = statistics.median(times[DL])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.3f} s | {p90(values):.3f} s | {min(values):.3f} s | {med / dl:.2f}x "
              f"| {sum(calls[name].values())} |")  # fmt: skip
    print("\n| submitter | AWS calls in one launch |\n|---|---|")
    for name, counted in calls.items():
        print(f"| {name} | {_calls(counted)} |")
    runs = {DL: 1, BOTO3: 1, SDK: 1 if SDK in cases else 0}
    runs[SDK] += 1 if SDK_OFF in cases else 0
    expected = {who: n * (args.repeat + 2) for who, n in runs.items()}
    print(f"\ntraining jobs created (warm-up + timed + counted): {jobs}; expected {expected}")
    if jobs != expected:
        sys.exit("Some launches did not create a training job.")
    print(f"dl package uploads seen by moto: {uploads} (the warm-up's and no other expected)")


def _calls(counted) -> str:
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(counted.items()))


def _version(module: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(module)


if __name__ == "__main__":
    sys.exit(main())
