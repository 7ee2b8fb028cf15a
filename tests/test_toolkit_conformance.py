"""Local == cloud: AWS's own in-container toolkit against dl's reproduction of it.

Each test lays out a run folder with ``contract.layout``, runs a probe program once
through the REAL toolkit (``sagemaker-training`` + ``sagemaker-pytorch-training``, the
packages SageMaker's PyTorch images run) and once the way dl's local backend does
(``contract.command`` + ``contract.training_env``), and compares what the program saw:
its ``SM_*`` environment, the launcher's other variables, argv, command line and cwd, and
what ends up in ``output/success`` / ``output/failure``.

Needs the toolkit in this Python: ``pip install -e '.[conformance]'``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

import pytest

from orchestrator.backends.local import contract

JOB = "conformance-job"
# Variables the probe reports besides SM_*: what the toolkit and the PyTorch container set
# for the program, and what torchrun sets for its workers.
OTHERS = (
    "PYTHONPATH", "TRAINING_JOB_NAME", "SAGEMAKER_TRAINING_MODULE", "SAGEMAKER_BASE_DIR", "CURRENT_HOST",
    "SAGEMAKER_REGION", "SAGEMAKER_JOB_NAME", "MASTER_ADDR", "MASTER_PORT", "NCCL_SOCKET_IFNAME",
    "NCCL_IB_DISABLE", "NCCL_DEBUG", "NCCL_PROTO", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
    "GROUP_RANK", "TORCHELASTIC_RUN_ID",
)  # fmt: skip
# SM_* values that are JSON documents; compared after json.loads for a readable diff.
JSON_VARS = {
    "SM_TRAINING_ENV", "SM_HPS", "SM_RESOURCE_CONFIG", "SM_INPUT_DATA_CONFIG", "SM_USER_ARGS", "SM_HOSTS",
    "SM_CHANNELS", "SM_FRAMEWORK_PARAMS", "SM_INSTANCE_GROUPS", "SM_INSTANCE_GROUPS_DICT",
    "SM_CURRENT_INSTANCE_GROUP_HOSTS", "SM_DISTRIBUTION_INSTANCE_GROUPS", "SM_IS_HETERO", "SM_NUM_CPUS",
    "SM_NUM_GPUS", "SM_NUM_NEURONS", "SM_LOG_LEVEL",
}  # fmt: skip
# ints, a float, a bool, strings (one with a space) and a one-letter key (``-k``)
HYPERPARAMETERS = {
    "lr": 0.002, "batch_size": 64, "fast_dev_run": True, "precision": "32-true", "name": "my exp", "k": 3,
}  # fmt: skip

PROBE = f"""\
import json, os, sys
others = {OTHERS!r}
seen = {{
    "env": {{k: v for k, v in os.environ.items() if k.startswith("SM_") or k in others}},
    "argv": sys.argv,
    "cwd": os.getcwd(),
    "cmdline": [a.decode() for a in open("/proc/self/cmdline", "rb").read().split(b"\\0")[:-1]],
}}
if os.environ.get("RANK", "0") == "0":
    with open(os.environ["PROBE_OUT"], "w") as f:
        json.dump(seen, f)
"""


def toolkit_launcher() -> tuple[list[str], str]:
    """(command that starts the toolkit, the Python it runs the program with); FAILS without it."""
    missing = [m for m in ("sagemaker_training", "sagemaker_pytorch_container") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(
            f"AWS's SageMaker training toolkit is not installed in {sys.executable} (missing {missing}); "
            "this test compares dl's local backend with it. Install the conformance extra: "
            "pip install -e '.[conformance]'",
            pytrace=False,
        )
    train = Path(sys.executable).parent / "train"  # the console script SageMaker's images run
    if train.is_file():
        shebang = train.read_text().splitlines()[0]
        if shebang.startswith("#!") and Path(shebang[2:].strip()).is_file():
            return [str(train)], shebang[2:].strip()
    return [sys.executable, "-m", "sagemaker_training.cli.train"], sys.executable


def base_env(tmp_path: Path) -> dict[str, str]:
    home, tmp = tmp_path / "home", tmp_path / "tmp"  # torchrun leaves its scratch folders in TMPDIR
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    # The venv's bin first: the toolkit finds `torchrun` on PATH, as in the image.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {"PATH": path, "HOME": str(home), "TMPDIR": str(tmp)}


def make_spec(tmp_path: Path, hyperparameters: dict, program: str = "probe.py") -> contract.ContainerSpec:
    channels = {}
    for name in ("train", "test"):
        folder = tmp_path / "datasets" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.csv").write_text("x,y\n1,2\n")
        channels[name] = folder
    return contract.ContainerSpec(
        job_name=JOB,
        program=program,
        # code/ is already filled, so the toolkit never downloads this (files.download_and_extract
        # only acts on an empty code/); it just reports it as SM_MODULE_DIR.
        submit_dir="s3://dl-conformance/packages/abc123/sourcedir.tar.gz",
        hyperparameters=hyperparameters,
        channels=channels,
        region="us-east-1",
    )


def prepare(tmp_path: Path, spec: contract.ContainerSpec, source: str = PROBE) -> Path:
    base = tmp_path / "opt" / "ml"
    contract.layout(base, spec)
    (base / "code" / spec.program).write_text(source)
    return base


def start_toolkit(tmp_path: Path, base: Path) -> subprocess.Popen:
    """AWS's toolkit as SageMaker starts it, with a clean environment."""
    launcher, _ = toolkit_launcher()
    env = {
        **base_env(tmp_path),
        "PROBE_OUT": str(tmp_path / "seen-by-toolkit.json"),
        "SAGEMAKER_BASE_DIR": str(base),
        "SM_STUDIO_LOCAL_MODE": "true",  # skip waiting for the host algo-1 to resolve
        "TRAINING_JOB_NAME": JOB,
        "SAGEMAKER_TRAINING_MODULE": contract.FRAMEWORK_MODULE,
    }
    return subprocess.Popen(launcher, env=env, cwd=tmp_path, stdout=PIPE, stderr=PIPE, text=True)


def start_ours(tmp_path: Path, base: Path, spec: contract.ContainerSpec) -> subprocess.Popen:
    """The program as dl's local backend starts it: contract.command from code/ with training_env."""
    _, python = toolkit_launcher()
    env = {**base_env(tmp_path), "PROBE_OUT": str(tmp_path / "seen-by-ours.json"), **contract.training_env(base, spec)}
    return subprocess.Popen(
        contract.command(python, spec), cwd=base / "code", env=env, stdout=PIPE, stderr=PIPE, text=True
    )


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_toolkit(tmp_path: Path, base: Path) -> subprocess.CompletedProcess:
    return finish(start_toolkit(tmp_path, base))


def run_ours(tmp_path: Path, base: Path, spec: contract.ContainerSpec) -> subprocess.CompletedProcess:
    return finish(start_ours(tmp_path, base, spec))


def run_both(
    tmp_path: Path, base: Path, spec: contract.ContainerSpec
) -> tuple[dict, dict, subprocess.CompletedProcess]:
    """Both launches of the probe, side by side (they only read the run folder): what each saw."""
    toolkit, ours = start_toolkit(tmp_path, base), start_ours(tmp_path, base, spec)
    tk, mine = finish(toolkit), finish(ours)
    return take_seen(tmp_path, tk, "toolkit"), take_seen(tmp_path, mine, "ours"), tk


def tail(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"


def take_seen(tmp_path: Path, proc: subprocess.CompletedProcess, who: str) -> dict:
    out = tmp_path / f"seen-by-{who}.json"
    assert proc.returncode == 0 and out.is_file(), f"{who} did not run the probe:\n{tail(proc)}"
    return json.loads(out.read_text())


def split_env(seen: dict) -> tuple[dict, dict]:
    env = seen["env"]
    return {k: v for k, v in env.items() if k.startswith("SM_")}, {k: v for k, v in env.items() if k in OTHERS}


def differences(toolkit: object, ours: object, path: str = "") -> list[str]:
    """Where two parsed values differ, down to the key (e.g. SM_TRAINING_ENV.distribution_hosts)."""
    if isinstance(toolkit, dict) and isinstance(ours, dict):
        return [
            line
            for key in sorted(set(toolkit) | set(ours), key=str)
            for line in differences(toolkit.get(key, "<absent>"), ours.get(key, "<absent>"), f"{path}.{key}")
        ]
    return [] if toolkit == ours else [f"{path.lstrip('.')}: toolkit {toolkit!r} != ours {ours!r}"]


def assert_same_sm(toolkit_sm: dict, ours_sm: dict, log: str) -> None:
    # An input of this test, not of SageMaker: it stops the toolkit waiting for DNS.
    assert toolkit_sm.pop("SM_STUDIO_LOCAL_MODE") == "true"
    assert sorted(ours_sm) == sorted(toolkit_sm), (
        f"only toolkit: {sorted(set(toolkit_sm) - set(ours_sm))}; only ours: {sorted(set(ours_sm) - set(toolkit_sm))}"
    )

    def parsed(env):
        return {k: json.loads(v) if k in JSON_VARS else v for k, v in env.items()}

    theirs, mine = parsed(toolkit_sm), parsed(ours_sm)
    assert mine == theirs, "\n".join(differences(theirs, mine)) + f"\n\ntoolkit log:\n{log}"
    assert ours_sm == toolkit_sm, "same values, different JSON text"


def test_environment_argv_and_cwd_match_toolkit(tmp_path):
    spec = make_spec(tmp_path, HYPERPARAMETERS)
    base = prepare(tmp_path, spec)
    toolkit, ours, tk = run_both(tmp_path, base, spec)
    success = base / "output" / "success"
    assert tk.returncode == 0 and success.is_file() and success.read_text() == "", tail(tk)
    success.unlink()

    toolkit_sm, toolkit_other = split_env(toolkit)
    ours_sm, ours_other = split_env(ours)
    assert_same_sm(toolkit_sm, ours_sm, tail(tk))
    # Spot checks, so that a toolkit change that broke both sides alike still shows.
    assert json.loads(ours_sm["SM_HPS"]) == HYPERPARAMETERS
    assert ours_sm["SM_CHANNEL_TRAIN"] == str(base / "input" / "data" / "train")
    assert ours_sm["SM_MODULE_DIR"] == spec.submit_dir and ours_sm["SM_MODULE_NAME"] == "probe"

    # Legitimate differences, compared as weakly as they must be:
    # - MASTER_ADDR is the container's host name (algo-1), which resolves only inside
    #   SageMaker's network; locally the master is this machine.
    assert toolkit_other.pop("MASTER_ADDR") == "algo-1"
    assert ours_other.pop("MASTER_ADDR") == contract.LOCAL_MASTER_ADDR
    # - NCCL_SOCKET_IFNAME=eth0 names the container's interface; this machine may have no
    #   eth0, so NCCL is left to choose.
    assert toolkit_other.pop("NCCL_SOCKET_IFNAME") == "eth0"
    assert "NCCL_SOCKET_IFNAME" not in ours_other
    # - PYTHONPATH is the toolkit's own sys.path; what the program relies on is code/ first.
    code = str(base / "code")
    assert toolkit_other.pop("PYTHONPATH").split(os.pathsep)[0] == code
    assert ours_other.pop("PYTHONPATH").split(os.pathsep)[0] == code
    assert ours_other == toolkit_other
    assert ours_other["MASTER_PORT"] == "7777" and ours_other["TRAINING_JOB_NAME"] == JOB

    # Same argv, same interpreter command line (``python -- probe.py ...``), run from code/.
    assert ours["argv"] == toolkit["argv"]
    assert toolkit["argv"][1:] == contract.to_cmd_args(HYPERPARAMETERS)
    assert "--name" in toolkit["argv"] and "my exp" in toolkit["argv"] and "-k" in toolkit["argv"]
    assert ours["cmdline"] == toolkit["cmdline"]
    assert toolkit["cwd"] == ours["cwd"] == str((base / "code").resolve())

    # Success is reported the same way.
    _, python = toolkit_launcher()
    assert contract.report_outcome(base, contract.command(python, spec), 0) == 0
    assert success.is_file() and success.read_text() == ""
    assert not (base / "output" / "failure").exists()


@pytest.mark.train
def test_torchrun_launch_matches_toolkit(tmp_path):
    hps = {"lr": 0.1, "epochs": 2, contract.TORCH_DISTRIBUTED: True}
    spec = make_spec(tmp_path, hps)
    base = prepare(tmp_path, spec)
    toolkit, ours, tk = run_both(tmp_path, base, spec)
    assert "torchrun" in tk.stdout + tk.stderr, tail(tk)

    toolkit_sm, toolkit_other = split_env(toolkit)
    ours_sm, ours_other = split_env(ours)
    assert_same_sm(toolkit_sm, ours_sm, tail(tk))
    assert json.loads(ours_sm["SM_FRAMEWORK_PARAMS"]) == {contract.TORCH_DISTRIBUTED: True}
    assert json.loads(ours_sm["SM_DISTRIBUTION_INSTANCE_GROUPS"]) == [contract.INSTANCE_GROUP]

    # torchrun picks a fresh rendezvous id and port per launch: present, not equal.
    for name in ("TORCHELASTIC_RUN_ID", "MASTER_PORT"):
        assert toolkit_other.pop(name) and ours_other.pop(name), name
    assert toolkit_other.pop("NCCL_SOCKET_IFNAME") == "eth0"  # see the test above
    assert "NCCL_SOCKET_IFNAME" not in ours_other
    assert toolkit_other.pop("PYTHONPATH").split(os.pathsep)[0] == ours_other.pop("PYTHONPATH").split(os.pathsep)[0]
    assert ours_other == toolkit_other
    workers = str(contract.detect_gpus() or 1)  # one per GPU, else one
    assert ours_other["RANK"] == "0" and ours_other["WORLD_SIZE"] == workers and ours_other["NCCL_PROTO"] == "simple"

    # The framework setting is not an argument of the program.
    assert ours["argv"] == toolkit["argv"] == ["probe.py", "--epochs", "2", "--lr", "0.1"]
    assert ours["cmdline"] == toolkit["cmdline"]
    assert toolkit["cwd"] == ours["cwd"] == str((base / "code").resolve())


FAILING = {
    "raises": (
        "import sys\n"
        "print('epoch 0 loss 0.7')\n"
        "print('ValueError: this stdout line looks like an error')\n"
        "print('warning: lr is high', file=sys.stderr)\n"
        "def step():\n"
        "    raise RuntimeError('boom: loss is nan')\n"
        "step()\n"
    ),
    "exits_3": "import sys\nprint('giving up')\nsys.exit(3)\n",
    "writes_own_failure": (
        "import os, sys\n"
        "with open(os.path.join(os.environ['SM_OUTPUT_DIR'], 'failure'), 'w') as f:\n"
        "    f.write('DataError: channel train is empty')\n"
        "sys.exit(2)\n"
    ),
}


@pytest.mark.parametrize("case", sorted(FAILING))
def test_failure_report_matches_toolkit(tmp_path, case):
    spec = make_spec(tmp_path, {"lr": 0.5, "name": "my exp"})
    base = prepare(tmp_path, spec, FAILING[case])
    failure = base / "output" / "failure"
    tk = run_toolkit(tmp_path, base)
    assert failure.is_file(), tail(tk)
    toolkit_text = failure.read_text()
    failure.unlink()
    # The toolkit exits 1 whatever the program's status was, and writes no success file.
    assert tk.returncode == contract.TOOLKIT_FAILURE_EXIT_CODE == 1, tail(tk)
    assert not (base / "output" / "success").exists()

    _, python = toolkit_launcher()
    cmd = contract.command(python, spec)
    mine = run_ours(tmp_path, base, spec)
    assert mine.returncode == {"raises": 1, "exits_3": 3, "writes_own_failure": 2}[case], tail(mine)
    assert contract.report_outcome(base, cmd, mine.returncode, mine.stdout, mine.stderr) == tk.returncode
    assert failure.read_text() == toolkit_text
    assert not (base / "output" / "success").exists()

    command_line = f'Command "{python} -- probe.py --lr 0.5 --name my exp"'
    expected = {
        "raises": (
            "ExecuteUserScriptError:\nExitCode 1\n"
            'ErrorMessage "ValueError: this stdout line looks like an error\n'
            " raise RuntimeError('boom: loss is nan')\n"
            ' RuntimeError: boom: loss is nan"\n' + command_line
        ),
        "exits_3": 'ExecuteUserScriptError:\nExitCode 3\nErrorMessage ""\n' + command_line,
        "writes_own_failure": "DataError: channel train is empty",
    }[case]
    assert toolkit_text == expected


def test_entry_point_name_rules_match_toolkit(tmp_path):
    _, python = toolkit_launcher()
    names = ["train.py", "sub/train.py", "a+b-c_d.py", ".hidden.py", "", "-x.py", "/abs.py", "../up.py",
             "a/./b.py", "my script.py", "x;rm.py", "a//b.py"]  # fmt: skip
    code = (
        "import json, sys\n"
        "from sagemaker_training import errors, process\n"
        "out = {}\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        process.validate_entry_point(name); out[name] = True\n"
        "    except errors.ClientError:\n"
        "        out[name] = False\n"
        "print(json.dumps(out))\n"
    )
    base = tmp_path / "opt" / "ml"  # importing the toolkit creates <base>/code
    env = {**base_env(tmp_path), "SAGEMAKER_BASE_DIR": str(base)}
    proc = subprocess.run([python, "-c", code, json.dumps(names)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, tail(proc)
    toolkit = json.loads(proc.stdout.strip().splitlines()[-1])

    def ours(name):
        try:
            contract.validate_program(name)
        except ValueError:
            return False
        return True

    assert {name: ours(name) for name in names} == toolkit
    assert toolkit["train.py"] and not toolkit["my script.py"]


@pytest.mark.train  # the toolkit pip-installs the package's requirements.txt (Lightning, so torch) into this venv
def test_the_mnist_package_trains_under_the_toolkit_as_it_does_locally(tmp_path):
    """The real thing: dl's package of the mnist job, extracted into code/ the way SageMaker
    extracts sourcedir.tar.gz, trained (two tiny epochs) by AWS's toolkit. It must pass
    (``output/success``) and leave the model, checkpoints and metrics where dl looks for them."""
    from orchestrator.jobs import find_job
    from orchestrator.packaging import build_package, extract_package

    job = find_job("mnist")
    package = build_package(job, tmp_path / "packages", max_mb=100)
    params = job.resolve({"max_epochs": "2", "limit_train_batches": "3", "limit_val_batches": "2"})
    spec = contract.ContainerSpec(
        job_name=JOB,
        program="dl_entry.py",
        submit_dir=f"s3://dl-conformance/packages/{package.sha256}/sourcedir.tar.gz",
        hyperparameters=params,
        region="us-east-1",
    )
    base = tmp_path / "opt" / "ml"
    contract.layout(base, spec)
    extract_package(package.path, base / "code")

    result = run_toolkit(tmp_path, base)

    assert result.returncode == 0, tail(result)
    assert (base / "output" / contract.SUCCESS_FILE).is_file()
    assert not (base / "output" / contract.FAILURE_FILE).exists()
    assert (base / "model" / "model.ckpt").is_file() and (base / "model" / "dl_model.json").is_file()
    assert {p.name for p in (base / "checkpoints").iterdir()} >= {"last.ckpt", "best.ckpt"}
    rows = (base / "output" / "data" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_acc" in rows[0]
    assert "epoch 2/2" in result.stdout + result.stderr


@pytest.mark.train  # as above: the toolkit pip-installs the package's requirements.txt into this venv
def test_a_script_project_package_trains_under_the_toolkit(tmp_path):
    """A plain-Trainer script's package (tests/scripts/plain, its torch line left to the container)
    run by AWS's toolkit with the wrapper as sagemaker_program: the script gets its `--` words and
    --set pairs, and dl's last.ckpt, metrics and model land where dl looks for them."""
    from orchestrator.packaging import build_package, extract_package
    from orchestrator.scripts import load_script

    job = load_script(str(Path(__file__).parent / "scripts" / "plain" / "train.py"))
    package = build_package(job, tmp_path / "packages", max_mb=100)
    spec = contract.ContainerSpec(
        job_name=JOB,
        program=job.entry_point,
        submit_dir=f"s3://dl-conformance/packages/{package.sha256}/sourcedir.tar.gz",
        hyperparameters=job.resolve({"lr": "0.1"}, ["--epochs", "2"]),
        region="us-east-1",
    )
    base = tmp_path / "opt" / "ml"
    contract.layout(base, spec)
    extract_package(package.path, base / "code")

    result = run_toolkit(tmp_path, base)

    out = result.stdout + result.stderr
    assert result.returncode == 0, tail(result)
    assert (base / "output" / contract.SUCCESS_FILE).is_file()
    assert "script sees lr=0.1 epochs=2" in out and "epoch 2/2" in out
    assert (base / "checkpoints" / "last.ckpt").is_file() and (base / "model" / "model.ckpt").is_file()
    assert len((base / "output" / "data" / "metrics.csv").read_text().splitlines()) == 3
