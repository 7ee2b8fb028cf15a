"""A local run's folder: laid out like SageMaker's /opt/ml (contract.py), and the child's environment.

Shared by the backend (submit), the supervisor (the run) and the smoke test, none of which
imports another for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.backends.base import LaunchSpec
from orchestrator.backends.local import contract
from orchestrator.settings import dl_home
from orchestrator.store import Store


def run_dir_root() -> Path:
    return dl_home() / "runs"


def run_dir(store: Store, run_id: str) -> Path:
    return store.home / "runs" / run_id


def log_file(base: Path) -> Path:
    return base / "dl" / "log.txt"


def container_spec(
    run_id: str, params: dict, data: dict[str, str], package_uri: str, program: str | None = None
) -> contract.ContainerSpec:
    """The run's container; ``program``: the job's entry point (a trainjob's dl_entry.py by default)."""
    from orchestrator.packaging import ENTRY_POINT

    return contract.ContainerSpec(
        job_name=run_id,
        program=program or ENTRY_POINT,
        submit_dir=package_uri,
        hyperparameters=dict(params),
        channels={name: Path(path) for name, path in data.items()},
    )


def prepare(base: Path, run_id: str, spec: LaunchSpec) -> contract.ContainerSpec:
    """Lay out the container folder and extract the package into code/."""
    from orchestrator.packaging import extract_package

    cspec = container_spec(run_id, spec.params, spec.data, spec.package.path.as_uri(), spec.job.entry_point)
    contract.layout(base, cspec)
    if not any((base / "code").iterdir()):
        extract_package(spec.package.path, base / "code")
    (base / "dl").mkdir(exist_ok=True)
    return cspec


def child_env(base: Path, cspec: contract.ContainerSpec) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(contract.training_env(base, cspec))
    env["PYTHONUNBUFFERED"] = "1"
    env["DL_CHECKPOINT_DIR"] = str(base / "checkpoints")
    return env
