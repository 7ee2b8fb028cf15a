"""Which container a SageMaker run trains in: AWS's PyTorch training Deep Learning Container.

The image URI comes from ``orchestrator/data/images.json``, a table generated from the SageMaker
SDK's own tables (sagemaker-core's ``image_uris``) by ``python -m
orchestrator.backends.sagemaker.image_table``, which checks that it reproduces the SDK's answer
for every version, Python, processor and region it holds. The lookup is offline (no network, no
AWS credentials) and reads a few kilobytes of JSON: no SDK, no cache.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from orchestrator.errors import UsageError

# Lightning 2.6.6 (what trainjobs pin) requires torch >=2.1,<4.0, so every 2.x image in
# the table can run it; we take the newest one. In sagemaker-core 2.27.0 (the table's source)
# the newest PyTorch training images are 2.7.1 (py312), 2.8.0 (py312), 2.9.0 (py312) and
# 2.10.0, which is built for py313 only. Lightning 2.6.6 supports Python 3.10-3.13.
# The full version (not the "2.10" alias) makes the tag name the exact release:
# pytorch-training:2.10.0-gpu-py313.
DEFAULT_FRAMEWORK_VERSION = "2.10.0"
DEFAULT_PY_VERSION = "py313"


def training_image(region: str, framework_version: str, py_version: str | None, gpu: bool, instance_type: str) -> str:
    """The ECR URI of the PyTorch training image for this region, version and processor.

    ``py_version=None`` takes the newest Python the version's images are built for
    (py313 for the default 2.10.0). ``gpu`` must agree with ``instance_type`` (ml.g*/ml.p*
    types are GPU types).

    An unknown version, region or Python version raises UsageError listing what exists.
    Never touches the network; imports nothing heavy.
    """
    if _is_gpu_type(instance_type) != gpu:
        raise ValueError(f"gpu={gpu} does not match instance type {instance_type!r}")
    table = _table()
    full = table["aliases"].get(framework_version, framework_version)
    spec = table["versions"].get(full)
    if spec is None:
        raise UsageError(
            f"No SageMaker PyTorch training image for framework version '{framework_version}'.",
            f"Supported versions include {', '.join(supported_versions()[-4:])} "
            f"(the default is {DEFAULT_FRAMEWORK_VERSION}), or pass --image URI.",
        )
    pythons = spec["py_versions"]
    if py_version is None:
        py_version = pythons[-1]
    if py_version not in pythons:
        raise UsageError(
            f"PyTorch {framework_version} training images are built for {', '.join(pythons)}, not {py_version}.",
            "Leave the Python version unset to get the right one.",
        )
    if region not in table["registries"] or region in spec["without"]:
        raise UsageError(
            f"No PyTorch {framework_version} training image in region '{region}'.",
            "Use an AWS region name such as us-east-1, us-west-2 or eu-west-1, or pass --image URI.",
        )
    return uri_from(table, region, framework_version, py_version, "gpu" if gpu else "cpu")


def uri_from(table: dict, region: str, version: str, py_version: str, processor: str) -> str:
    """The URI as the SDK formats it: ``HOST/REPOSITORY:VERSION-PROCESSOR-PY`` (an alias stays in the tag)."""
    return f"{table['registries'][region]}/{table['repository']}:{version}-{processor}-{py_version}"


def supported_versions() -> list[str]:
    """PyTorch versions (x.y.z) that have SageMaker training images in the table, oldest first."""
    return sorted(_table()["versions"], key=_version_key)


def registry_account(region: str) -> str | None:
    """The account that publishes the PyTorch training images in ``region``; None for a region the table lacks."""
    host = _table()["registries"].get(region)
    return host.split(".", 1)[0] if host else None


@functools.cache
def _table() -> dict:
    return json.loads(resources.files("orchestrator.data").joinpath("images.json").read_text(encoding="utf-8"))


def _is_gpu_type(instance_type: str) -> bool:
    """The SDK's rule: an instance family starting with g or p (ml.g5, ml.p4d) is a GPU type."""
    family = instance_type.removeprefix("ml.").split(".", 1)[0]
    return family[:1] in ("g", "p")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))
