"""SageMaker's training-container contract, reproduced in a local folder.

SageMaker writes ``/opt/ml/input/config/*.json``, copies data channels to
``/opt/ml/input/data/<channel>``, extracts the package into ``/opt/ml/code``,
and AWS's in-container toolkit (``sagemaker-training`` 5.1.x with
``sagemaker-pytorch-training`` 3.0.x) sets the ``SM_*`` variables and runs
``python -- <program> --key value ...`` from ``code/``. This module does the
same for a run folder, value for value, so that a package that trains here
trains there. tests/test_toolkit_conformance.py runs AWS's own toolkit on a
folder laid out by this module and compares what the program sees.

Framework settings travel the way they do in CreateTrainingJob: as
``sagemaker_*`` keys of the hyperparameters (``sagemaker_torch_distributed_enabled``
makes the toolkit start the program under ``torchrun``). They are split from the
program's own hyperparameters with the toolkit's rule and never reach its argv.

Outcome, as the toolkit reports it (mirror it with ``report_outcome``):

- exit 0: an empty ``output/success`` file; the toolkit exits 0.
- any other exit: ``output/failure`` holds ``failure_message(...)``, e.g.::

      ExecuteUserScriptError:
      ExitCode 1
      ErrorMessage "raise RuntimeError("boom")
       RuntimeError: boom"
      Command "/usr/bin/python3 -- train.py --lr 0.1"

  unless the program wrote ``output/failure`` itself (then that text is kept);
  the toolkit then exits 1 whatever the program's own status was. SageMaker
  shows the file's first 1024 characters as the job's FailureReason.

Deliberate local differences (the container's network does not exist here):
``MASTER_ADDR`` is ``127.0.0.1`` instead of the container's host name
``algo-1``, and ``NCCL_SOCKET_IFNAME`` (``eth0`` in the container) is left
unset so NCCL picks one of this machine's interfaces.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.backends.runtime_io import TORCH_DISTRIBUTED, decode_hyperparameters, hyperparameters_json
from orchestrator.fsutil import atomic_write

FRAMEWORK_MODULE = "sagemaker_pytorch_container.training:main"
CURRENT_HOST = "algo-1"
INSTANCE_GROUP = "homogeneousCluster"
NETWORK_INTERFACE = "eth0"
MASTER_PORT = "7777"  # sagemaker_pytorch_container.training.MASTER_PORT
LOCAL_MASTER_ADDR = "127.0.0.1"

SUCCESS_FILE = "success"
FAILURE_FILE = "failure"
TOOLKIT_FAILURE_EXIT_CODE = 1  # sagemaker_training.trainer.DEFAULT_FAILURE_CODE

# sagemaker_training.params.SAGEMAKER_HYPERPARAMETERS: taken out of the program's hyperparameters
# and, unlike the other ``sagemaker_*`` keys, not passed on as additional framework parameters.
_TOOLKIT_KEYS = (
    "sagemaker_program", "sagemaker_submit_directory", "sagemaker_enable_cloudwatch_metrics",
    "sagemaker_region", "sagemaker_container_log_level", "sagemaker_job_name",
    "default_user_module_name", "_tuning_objective_metric", "sagemaker_s3_output",
)  # fmt: skip
_SAGEMAKER_PREFIX = "sagemaker_"

# Framework flags that put the current instance group into the distribution
# (environment.get_distribution_instance_groups_from_resource_config).
_DISTRIBUTION_FLAGS = (
    "sagemaker_mpi_enabled", "sagemaker_parameter_server_enabled",
    "sagemaker_distributed_dataparallel_enabled", "sagemaker_pytorch_ddp_enabled",
    "sagemaker_pytorch_xla_multi_worker_enabled", "sagemaker_multi_worker_mirrored_strategy_enabled",
    TORCH_DISTRIBUTED,
)  # fmt: skip
# Launchers the PyTorch container picks before torchrun; not reproduced here.
_OTHER_LAUNCHERS = (
    "sagemaker_mpi_enabled", "sagemaker_pytorch_ddp_enabled",
    "sagemaker_distributed_dataparallel_enabled", "sagemaker_pytorch_xla_multi_worker_enabled",
)  # fmt: skip

# sagemaker_training.process.validate_entry_point
_SAFE_ENTRY_POINT = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._+-]*(/[A-Za-z0-9._+-]+)*$")


@dataclass
class ContainerSpec:
    """What a run's container looks like: the program, its hyperparameters, data and resources.

    ``hyperparameters`` is the CreateTrainingJob map before JSON encoding; it may carry
    framework settings under their ``sagemaker_*`` names (e.g. ``sagemaker_torch_distributed_enabled``).
    """

    job_name: str
    program: str
    submit_dir: str
    hyperparameters: dict[str, object]
    channels: dict[str, Path] = field(default_factory=dict)
    instance_type: str = "local"
    hosts: list[str] = field(default_factory=lambda: [CURRENT_HOST])
    num_gpus: int | None = None
    num_cpus: int | None = None
    region: str = ""

    def sagemaker_hyperparameters(self) -> dict[str, object]:
        return {
            "sagemaker_program": self.program,
            "sagemaker_submit_directory": self.submit_dir,
            "sagemaker_region": self.region,
        }


def _toolkit_hyperparameters(spec: ContainerSpec) -> tuple[dict, dict, dict]:
    """(program's hyperparameters, sagemaker_* settings, additional framework parameters).

    As the toolkit sees them: read back from hyperparameters.json (``json.loads`` of each
    value, so tuples arrive as lists) and split by ``environment.Environment``'s rule.
    """
    values = decode_hyperparameters(hyperparameters_json({**spec.hyperparameters, **spec.sagemaker_hyperparameters()}))
    framework = {k: v for k, v in values.items() if k in _TOOLKIT_KEYS or k.startswith(_SAGEMAKER_PREFIX)}
    program = {k: v for k, v in values.items() if k not in framework}
    additional = {k: v for k, v in framework.items() if k not in _TOOLKIT_KEYS}
    return program, framework, additional


def layout(base: Path, spec: ContainerSpec) -> None:
    """Create the ``/opt/ml`` tree under ``base`` (code/ is filled by the caller)."""
    config = base / "input" / "config"
    for folder in (config, base / "input" / "data", base / "code", base / "model", base / "checkpoints",
                   base / "output" / "data", base / "output" / "intermediate"):  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
    hps = {**spec.hyperparameters, **spec.sagemaker_hyperparameters()}
    _write_json(config / "hyperparameters.json", hyperparameters_json(hps))
    _write_json(config / "resourceconfig.json", resource_config(spec))
    _write_json(config / "inputdataconfig.json", input_data_config(spec))
    for name, source in spec.channels.items():
        target = base / "input" / "data" / name
        if target.is_symlink() or target.exists():
            continue
        # SageMaker copies a channel in File mode; a link gives the program the same view
        # without duplicating data sets, and the program never writes to its inputs.
        target.symlink_to(Path(source).resolve(), target_is_directory=Path(source).is_dir())


def resource_config(spec: ContainerSpec) -> dict:
    return {
        "current_host": CURRENT_HOST,
        "current_instance_type": spec.instance_type,
        "current_group_name": INSTANCE_GROUP,
        "hosts": list(spec.hosts),
        "instance_groups": [
            {
                "instance_group_name": INSTANCE_GROUP,
                "instance_type": spec.instance_type,
                "hosts": list(spec.hosts),
            }
        ],
        "network_interface_name": NETWORK_INTERFACE,
    }


def input_data_config(spec: ContainerSpec) -> dict:
    channel = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
    channel["RecordWrapperType"] = "None"
    return {name: dict(channel) for name in sorted(spec.channels)}


def detect_gpus() -> int:
    """GPUs as the toolkit counts them: lines of ``nvidia-smi --list-gpus`` that start with ``GPU ``."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.split("\n") if line.startswith("GPU ")) if out.returncode == 0 else 0


def _torch_version() -> str | None:
    """``torch.__version__`` of this interpreter without importing torch (the PyTorch container
    exports it as SM_DLC_TORCH_VERSION; it leaves the variable out when torch is missing)."""
    try:
        found = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for folder in found.submodule_search_locations:
        version_py = Path(folder) / "version.py"
        if version_py.is_file():
            match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", version_py.read_text(), re.M)
            if match:
                return match.group(1)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def _env_value(value: object) -> str:
    """How the toolkit renders a value into an environment variable (mapping.to_env_vars)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def to_cmd_args(hyperparameters: dict[str, object]) -> list[str]:
    """``--key value`` pairs exactly as the toolkit builds them (sorted; one-letter keys get one dash)."""
    args: list[str] = []
    for key in sorted(hyperparameters):
        value = hyperparameters[key]
        name = str(key)
        args.append((f"--{name}" if len(name) > 1 else f"-{name}") if name else "")
        if isinstance(value, dict):
            args.append(",".join(f"{k}={v}" for k, v in sorted(value.items())))
        else:
            args.append("" if value is None else str(value))
    return args


class _Toolkit:
    """The toolkit's view of a spec: what ``environment.Environment`` computes from the files."""

    def __init__(self, spec: ContainerSpec):
        self.hyperparameters, self.framework, self.additional = _toolkit_hyperparameters(spec)
        self.resources = resource_config(spec)
        self.hosts = list(self.resources["hosts"])
        self.groups = {g["instance_group_name"]: g for g in self.resources["instance_groups"]}
        if "sagemaker_distribution_instance_groups" in self.additional:
            self.distribution_groups = self.additional["sagemaker_distribution_instance_groups"]
        elif any(self.additional.get(flag, False) for flag in _DISTRIBUTION_FLAGS):
            self.distribution_groups = [INSTANCE_GROUP]
        else:
            self.distribution_groups = []
        self.distribution_hosts = [
            host for name, group in self.groups.items() if name in self.distribution_groups for host in group["hosts"]
        ]
        self.master_hostname = (self.distribution_hosts or self.hosts)[0]
        self.num_gpus = detect_gpus() if spec.num_gpus is None else spec.num_gpus
        self.num_cpus = spec.num_cpus or os.cpu_count() or 1
        self.program = str(self.framework.get("sagemaker_program"))
        distributed = INSTANCE_GROUP in self.distribution_groups
        self.torchrun = distributed and bool(self.additional.get(TORCH_DISTRIBUTED))


def training_env(base: Path, spec: ContainerSpec) -> dict[str, str]:
    """What the program finds in its environment from the toolkit: the SM_* variables, plus the
    settings the toolkit and the PyTorch container export (PYTHONPATH, MASTER_*, NCCL_*, ...)."""
    base = Path(base)
    tk = _Toolkit(spec)
    input_dir = str(base / "input")
    hps = tk.hyperparameters
    channel_dirs = {name: str(base / "input" / "data" / name) for name in input_data_config(spec)}
    resources = tk.resources
    log_level = tk.framework.get("sagemaker_container_log_level", logging.INFO)
    module_dir = str(tk.framework.get("sagemaker_submit_directory", base / "code"))
    module_name = tk.program[:-3] if tk.program.endswith(".py") else tk.program
    props = {
        "additional_framework_parameters": tk.additional,
        "channel_input_dirs": channel_dirs,
        "current_host": CURRENT_HOST,
        "current_instance_group": INSTANCE_GROUP,
        "current_instance_group_hosts": list(tk.groups[INSTANCE_GROUP]["hosts"]),
        "current_instance_type": spec.instance_type,
        "distribution_hosts": tk.distribution_hosts,
        "distribution_instance_groups": tk.distribution_groups,
        "framework_module": FRAMEWORK_MODULE,
        "hosts": tk.hosts,
        "hyperparameters": hps,
        "input_config_dir": str(base / "input" / "config"),
        "input_data_config": input_data_config(spec),
        "input_dir": input_dir,
        "instance_groups": list(tk.groups),
        "instance_groups_dict": tk.groups,
        "is_hetero": len(tk.groups) > 1,
        "is_master": CURRENT_HOST == tk.master_hostname,
        # Set only when SageMaker passes SM_HP_MP_PARAMETERS (model-parallel jobs).
        "is_modelparallel_enabled": None,
        "is_smddpmprun_installed": shutil.which("smddpmprun") is not None,
        "is_smddprun_installed": shutil.which("smddprun") is not None,
        "job_name": spec.job_name,
        "log_level": log_level,
        "master_hostname": tk.master_hostname,
        "model_dir": str(base / "model"),
        "module_dir": module_dir,
        "module_name": module_name,
        "network_interface_name": NETWORK_INTERFACE,
        "num_cpus": tk.num_cpus,
        "num_gpus": tk.num_gpus,
        # The toolkit asks `neuron-ls`; AWS Trainium/Inferentia devices are not used locally.
        "num_neurons": 0,
        "output_data_dir": str(base / "output" / "data"),
        "output_dir": str(base / "output"),
        "output_intermediate_dir": str(base / "output" / "intermediate"),
        "resource_config": resources,
        "topology": [],
        "user_entry_point": tk.program,
    }
    env = {
        "hosts": props["hosts"],
        "network_interface_name": NETWORK_INTERFACE,
        "hps": hps,
        "user_entry_point": tk.program,
        "framework_params": tk.additional,
        "resource_config": resources,
        "input_data_config": props["input_data_config"],
        "output_data_dir": props["output_data_dir"],
        "channels": sorted(channel_dirs),
        "current_host": CURRENT_HOST,
        "current_instance_type": spec.instance_type,
        "current_instance_group": INSTANCE_GROUP,
        "current_instance_group_hosts": props["current_instance_group_hosts"],
        "instance_groups": props["instance_groups"],
        "instance_groups_dict": tk.groups,
        "distribution_instance_groups": tk.distribution_groups,
        "is_hetero": props["is_hetero"],
        "module_name": module_name,
        "log_level": log_level,
        "framework_module": FRAMEWORK_MODULE,
        "input_dir": input_dir,
        "input_config_dir": props["input_config_dir"],
        "output_dir": props["output_dir"],
        "num_cpus": tk.num_cpus,
        "num_gpus": tk.num_gpus,
        "num_neurons": 0,
        "model_dir": props["model_dir"],
        "module_dir": module_dir,
        "training_env": props,
        "user_args": to_cmd_args(hps),
        "output_intermediate_dir": props["output_intermediate_dir"],
    }
    for name, path in channel_dirs.items():
        env[f"channel_{name}"] = path
    for key, value in hps.items():
        env[f"hp_{key}"] = value
    out = {f"SM_{key.upper()}": _env_value(value) for key, value in env.items()}
    torch_version = _torch_version()
    if torch_version:
        out["SM_DLC_TORCH_VERSION"] = torch_version
    # The toolkit exports its sys.path, the code folder first.
    code_dir = str(base / "code")
    inherited = os.environ.get("PYTHONPATH")
    out.update(
        SAGEMAKER_BASE_DIR=str(base),
        SAGEMAKER_TRAINING_MODULE=FRAMEWORK_MODULE,  # set by the PyTorch image
        TRAINING_JOB_NAME=spec.job_name,
        CURRENT_HOST=CURRENT_HOST,
        SAGEMAKER_REGION=str(tk.framework.get("sagemaker_region") or ""),
        SAGEMAKER_JOB_NAME=str(tk.framework.get("sagemaker_job_name", "")),
        PYTHONPATH=os.pathsep.join([code_dir, inherited] if inherited else [code_dir]),
        # sagemaker_pytorch_container.training: _set_nccl_environment, _set_distributed_environment.
        NCCL_IB_DISABLE="1",
        NCCL_DEBUG="WARN",
        MASTER_ADDR=LOCAL_MASTER_ADDR,
        MASTER_PORT=MASTER_PORT,
    )
    if tk.torchrun:
        out["NCCL_PROTO"] = "simple"  # torch_distributed.TorchDistributedRunner._setup
    return out


def validate_program(program: str) -> str:
    """The toolkit's rule for entry point names (process.validate_entry_point); ValueError if broken."""
    if not program:
        raise ValueError("The training entry point name is empty.")
    if not _SAFE_ENTRY_POINT.match(program) or any(part in (".", "..") for part in program.split("/")):
        raise ValueError(
            f"The training entry point {program!r} is not a plain relative path; SageMaker's toolkit "
            "accepts only letters, digits, '.', '_', '+', '-' and '/', not starting with '-' or '/', "
            "without '.' or '..' segments."
        )
    return program


def command(python: str, spec: ContainerSpec) -> list[str]:
    """How the toolkit starts the entry point from code/: ``python -- <program> --key value ...``,
    or ``torchrun --nnodes N --nproc_per_node P <program> ...`` with sagemaker_torch_distributed_enabled.

    Only ``.py`` programs: the toolkit runs a package (code/ with a setup.py) as ``python -m``
    after ``pip install .`` and anything else through ``/bin/sh -c``; dl does neither.
    """
    tk = _Toolkit(spec)
    program = validate_program(tk.program)
    if not program.endswith(".py"):
        raise ValueError(f"{program!r} is not a .py program; only Python scripts are run like the toolkit.")
    args = to_cmd_args(tk.hyperparameters)
    if INSTANCE_GROUP in tk.distribution_groups:
        other = [flag for flag in _OTHER_LAUNCHERS if tk.additional.get(flag)]
        if other:
            raise ValueError(f"{other[0]} asks for a launcher that is not reproduced locally; use torchrun.")
    if not tk.torchrun:
        return [python, "--", program, *args]
    default_procs = tk.num_gpus if tk.num_gpus > 0 else 1
    procs = tk.additional.get("sagemaker_mpi_num_of_processes_per_host", default_procs)
    torchrun = Path(python).parent / "torchrun"
    cmd = [str(torchrun) if torchrun.is_file() else "torchrun", "--nnodes", str(len(tk.distribution_hosts))]
    cmd += ["--nproc_per_node", str(procs)]
    if len(tk.distribution_hosts) > 1:
        cmd += ["--master_addr", tk.master_hostname, "--master_port", MASTER_PORT]
        cmd += ["--node_rank", str(tk.distribution_hosts.index(CURRENT_HOST))]
    return [*cmd, program, *args]


# Names the toolkit looks for in the program's output to start its error message
# (sagemaker_training._PYTHON_ERRORS_ + _MPI_ERRORS_ + the runner's error class).
_ERROR_NAMES = (
    "BaseException", "Exception", "ArithmeticError", "AssertionError", "AttributeError",
    "BlockingIOError", "BrokenPipeError", "BufferError", "ChildProcessError", "ConnectionAbortedError",
    "ConnectionError", "ConnectionRefusedError", "ConnectionResetError", "EOFError", "EnvironmentError",
    "FileExistsError", "FileNotFoundError", "FloatingPointError", "IOError", "ImportError",
    "IndentationError", "IndexError", "InterruptedError", "IsADirectoryError", "KeyError", "LookupError",
    "MemoryError", "ModuleNotFoundError", "NameError", "NotADirectoryError", "NotImplementedError",
    "OSError", "OverflowError", "PermissionError", "ProcessLookupError", "RecursionError",
    "ReferenceError", "RuntimeError", "SyntaxError", "SystemError", "TabError", "TimeoutError",
    "TypeError", "UnboundLocalError", "UnicodeDecodeError", "UnicodeEncodeError", "UnicodeError",
    "UnicodeTranslateError", "ValueError", "ZeroDivisionError", "Invalid requirement",
    "ResourceExhaustedError", "OutOfRangeError", "InvalidArgumentError",
    "mpirun.real", "ORTE", "ExecuteUserScriptError",
)  # fmt: skip
_COMPILER_PATHS = ("tensorflow/compiler/xla", "tensorflow/compiler/tf2xla", "tensorflow/python/compiler/xla",
                   "torch_xla/")  # fmt: skip


def _error_lines(text: str) -> str:
    """process.watch: from the first line naming an error on, every line, stripped of ' :\\n'."""
    output: list[str] = []
    start = False
    for line in text.strip().split("\n") if text else []:
        line = re.sub(r"\[(\d),(\d)\]<stdout>", "", re.sub(r"\[(\d),(\d)\]<stderr>", "", line))
        if start or any(name in line for name in _ERROR_NAMES):
            start = True
            output.append(line.strip(" :\n") + "\n")
    return " ".join(output)


def failure_message(cmd: list[str], returncode: int, stdout: str = "", stderr: str = "") -> str:
    """The text the toolkit writes to ``output/failure`` when the program exits non-zero.

    ``stdout``/``stderr`` are the program's two streams (pass a merged log as ``stdout``).
    The toolkit reads them in 64 KiB chunks, so on very long lines its text may differ slightly.
    """
    captured = " ".join([_error_lines(stdout), _error_lines(stderr)])
    captured = "\n".join(dict.fromkeys(captured.split("\n"))).strip()
    extra = None
    if returncode == 137:
        extra = "OutOfMemory: Process killed by SIGKILL (signal 9)"
    if captured and any(path in captured for path in _COMPILER_PATHS):
        extra = "SMTrainingCompiler Error: Error occurred in SMTrainingCompiler."
    lines = ["ExecuteUserScriptError:", f"ExitCode {returncode}", f'ErrorMessage "{captured}"']
    if extra is not None:
        lines.append(f'ExtraInfo "{extra}"')
    lines.append(f'Command "{" ".join(cmd)}"')
    return "\n".join(lines).strip()


def report_outcome(base: Path, cmd: list[str], returncode: int, stdout: str = "", stderr: str = "") -> int:
    """Write ``output/success`` or ``output/failure`` as the toolkit does; return the toolkit's exit code.

    A failure file the program wrote itself is kept, as the toolkit keeps it.
    """
    output = Path(base) / "output"
    output.mkdir(parents=True, exist_ok=True)
    if returncode == 0:
        (output / SUCCESS_FILE).write_text("")
        return 0
    failure = output / FAILURE_FILE
    if not failure.exists():
        failure.write_text(failure_message(cmd, returncode, stdout, stderr))
    return TOOLKIT_FAILURE_EXIT_CODE


def _write_json(path: Path, data: object) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
