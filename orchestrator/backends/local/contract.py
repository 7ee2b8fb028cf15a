"""SageMaker's training-container contract, reproduced in a local folder.

SageMaker writes ``/opt/ml/input/config/*.json``, copies data channels to
``/opt/ml/input/data/<channel>``, extracts the package into ``/opt/ml/code``,
and AWS's in-container toolkit (``sagemaker-training``) sets the ``SM_*``
variables and runs ``python <program> --key value ...``. This module does the
same for a run folder, value for value, so that a package that trains here
trains there. tests/test_toolkit_conformance.py runs AWS's own toolkit on a
folder laid out by this module and compares what the program sees.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

FRAMEWORK_MODULE = "sagemaker_pytorch_container.training:main"
CURRENT_HOST = "algo-1"
INSTANCE_GROUP = "homogeneousCluster"


@dataclass
class ContainerSpec:
    """What a run's container looks like: the program, its hyperparameters, data and resources."""

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


def hyperparameters_json(values: dict[str, object]) -> dict[str, str]:
    """The CreateTrainingJob HyperParameters map: every value JSON-encoded into a string."""
    return {key: json.dumps(value) for key, value in values.items()}


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
        "network_interface_name": "eth0",
    }


def input_data_config(spec: ContainerSpec) -> dict:
    return {
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in sorted(spec.channels)
    }


def detect_gpus() -> int:
    """GPUs as the toolkit counts them: lines of ``nvidia-smi --list-gpus``."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return len([line for line in out.stdout.splitlines() if line.strip()]) if out.returncode == 0 else 0


def _env_value(value: object) -> str:
    """How the toolkit renders a value into an environment variable."""
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
        args.append(f"--{key}" if len(key) > 1 else f"-{key}")
        if isinstance(value, dict):
            args.append(",".join(f"{k}={v}" for k, v in sorted(value.items())))
        else:
            args.append("" if value is None else str(value))
    return args


def training_env(base: Path, spec: ContainerSpec) -> dict[str, str]:
    """The SM_* variables the toolkit exports for this container, plus the toolkit's own settings."""
    base = Path(base)
    input_dir = str(base / "input")
    hps = dict(spec.hyperparameters)
    framework_params = spec.sagemaker_hyperparameters()
    additional = {k: v for k, v in framework_params.items() if k not in _TOOLKIT_KEYS}
    channel_dirs = {name: str(base / "input" / "data" / name) for name in input_data_config(spec)}
    num_gpus = detect_gpus() if spec.num_gpus is None else spec.num_gpus
    num_cpus = spec.num_cpus or os.cpu_count() or 1
    resources = resource_config(spec)
    groups = {g["instance_group_name"]: g for g in resources["instance_groups"]}
    distribution_groups = [INSTANCE_GROUP] if framework_params.get("sagemaker_torch_distributed_enabled") else []
    props = {
        "additional_framework_parameters": additional,
        "channel_input_dirs": channel_dirs,
        "current_host": CURRENT_HOST,
        "current_instance_group": INSTANCE_GROUP,
        "current_instance_group_hosts": list(spec.hosts),
        "current_instance_type": spec.instance_type,
        "distribution_hosts": list(spec.hosts),
        "distribution_instance_groups": distribution_groups,
        "framework_module": FRAMEWORK_MODULE,
        "hosts": list(spec.hosts),
        "hyperparameters": hps,
        "input_config_dir": str(base / "input" / "config"),
        "input_data_config": input_data_config(spec),
        "input_dir": input_dir,
        "instance_groups": list(groups),
        "instance_groups_dict": groups,
        "is_hetero": False,
        "is_master": spec.hosts[0] == CURRENT_HOST,
        "is_modelparallel_enabled": None,
        "is_smddpmprun_installed": False,
        "is_smddprun_installed": False,
        "job_name": spec.job_name,
        "log_level": logging.INFO,
        "master_hostname": spec.hosts[0],
        "model_dir": str(base / "model"),
        "module_dir": spec.submit_dir,
        "module_name": spec.program[:-3] if spec.program.endswith(".py") else spec.program,
        "network_interface_name": "eth0",
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "num_neurons": 0,
        "output_data_dir": str(base / "output" / "data"),
        "output_dir": str(base / "output"),
        "output_intermediate_dir": str(base / "output" / "intermediate"),
        "resource_config": resources,
        "topology": [],
        "user_entry_point": spec.program,
    }
    env = {
        "hosts": props["hosts"],
        "network_interface_name": "eth0",
        "hps": hps,
        "user_entry_point": spec.program,
        "framework_params": additional,
        "resource_config": resources,
        "input_data_config": props["input_data_config"],
        "output_data_dir": props["output_data_dir"],
        "channels": sorted(channel_dirs),
        "current_host": CURRENT_HOST,
        "current_instance_type": spec.instance_type,
        "current_instance_group": INSTANCE_GROUP,
        "current_instance_group_hosts": props["current_instance_group_hosts"],
        "instance_groups": props["instance_groups"],
        "instance_groups_dict": groups,
        "distribution_instance_groups": distribution_groups,
        "is_hetero": False,
        "module_name": props["module_name"],
        "log_level": logging.INFO,
        "framework_module": FRAMEWORK_MODULE,
        "input_dir": input_dir,
        "input_config_dir": props["input_config_dir"],
        "output_dir": props["output_dir"],
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "num_neurons": 0,
        "model_dir": props["model_dir"],
        "module_dir": spec.submit_dir,
        "training_env": props,
        "user_args": to_cmd_args(hps),
        "output_intermediate_dir": props["output_intermediate_dir"],
    }
    for name, path in channel_dirs.items():
        env[f"channel_{name}"] = path
    for key, value in hps.items():
        env[f"hp_{key}"] = value
    out = {f"SM_{key.upper()}": _env_value(value) for key, value in env.items()}
    out.update(
        SAGEMAKER_BASE_DIR=str(base),
        TRAINING_JOB_NAME=spec.job_name,
        CURRENT_HOST=CURRENT_HOST,
        SAGEMAKER_REGION=spec.region,
        SAGEMAKER_JOB_NAME="",
    )
    return out


_TOOLKIT_KEYS = {
    "sagemaker_program", "sagemaker_submit_directory", "sagemaker_region", "sagemaker_job_name",
    "sagemaker_container_log_level", "sagemaker_s3_output", "sagemaker_enable_cloudwatch_metrics",
}  # fmt: skip


def command(python: str, spec: ContainerSpec) -> list[str]:
    """How the toolkit starts a ``.py`` entry point: ``python <program> --key value ...`` from code/."""
    return [python, spec.program, *to_cmd_args(spec.hyperparameters)]


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
TORCH_DISTRIBUTED = "sagemaker_torch_distributed_enabled"
LOCAL_MASTER_ADDR = "127.0.0.1"
TOOLKIT_FAILURE_EXIT_CODE = 1
def report_outcome(*a): return 1
def validate_program(n): return n
