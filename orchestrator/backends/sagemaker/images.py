"""Which container a SageMaker run trains in: AWS's PyTorch training Deep Learning Container.

The image URI comes from the SageMaker SDK's own tables
(``sagemaker.core.image_uris.retrieve``, package ``sagemaker-core``), which know each
version's tags and each region's registry account. The lookup is offline: no network,
no AWS credentials. Importing the SDK costs about 1.3 s (it pulls in boto3, pandas and
pydantic), so it happens only inside ``training_image`` on a cache miss; resolved URIs
are kept in ``<cache_dir>/image-uris.json`` and a repeat launch reads that file instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from orchestrator.errors import UsageError

# Lightning 2.6.6 (what trainjobs pin) requires torch >=2.1,<4.0, so every 2.x image in
# the SDK's tables can run it; we take the newest one they know. In sagemaker-core 2.27.0
# the newest PyTorch training images are 2.7.1 (py312), 2.8.0 (py312), 2.9.0 (py312) and
# 2.10.0, which is built for py313 only. Lightning 2.6.6 supports Python 3.10-3.13.
# The full version (not the "2.10" alias) makes the tag name the exact release:
# pytorch-training:2.10.0-gpu-py313.
DEFAULT_FRAMEWORK_VERSION = "2.10.0"
DEFAULT_PY_VERSION = "py313"

CACHE_FILE = "image-uris.json"
_CACHE_SCHEMA = 1


def training_image(
    region: str,
    framework_version: str,
    py_version: str | None,
    gpu: bool,
    instance_type: str,
    cache_dir: Path,
) -> str:
    """The ECR URI of the PyTorch training image for this region, version and processor.

    ``py_version=None`` takes the newest Python the version's images are built for
    (py313 for the default 2.10.0). ``gpu`` must agree with ``instance_type`` (ml.g*/ml.p*
    types are GPU types): the cache is keyed by (region, version, py_version, cpu/gpu).

    An unknown version, region or Python version raises UsageError listing what exists.
    Never touches the network. A cache that cannot be read or written is ignored.
    """
    if _is_gpu_type(instance_type) != gpu:
        raise ValueError(f"gpu={gpu} does not match instance type {instance_type!r}")
    if py_version is None and framework_version == DEFAULT_FRAMEWORK_VERSION:
        py_version = DEFAULT_PY_VERSION
    key = "|".join((region, framework_version, py_version or "newest", "gpu" if gpu else "cpu"))
    path = Path(cache_dir) / CACHE_FILE
    cached = _read_cache(path).get(key)
    if isinstance(cached, str) and cached:
        return cached
    uri = _retrieve(region, framework_version, py_version, instance_type)
    _write_cache(path, key, uri)
    return uri


def supported_versions() -> list[str]:
    """PyTorch versions (x.y.z) that have SageMaker training images, oldest first. Imports the SDK."""
    from sagemaker.core import image_uris

    versions = [v for v in image_uris.list_versions("pytorch", "training") if v.count(".") == 2]
    return sorted(versions, key=_version_key)


def _retrieve(region: str, version: str, py_version: str | None, instance_type: str) -> str:
    try:
        from sagemaker.core import image_uris  # ~1.3 s; only on a cache miss
    except ImportError:
        from orchestrator.errors import BackendError

        raise BackendError(
            "Resolving the training image needs sagemaker-core, which is not installed here.",
            "Install it: pip install -e '.[aws]', or pass --image URI.",
        ) from None

    try:
        if py_version is None:
            py_version = image_uris.list_py_versions("pytorch", version, "training")[-1]
        return image_uris.retrieve(
            framework="pytorch",
            region=region,
            version=version,
            py_version=py_version,
            instance_type=instance_type,
            image_scope="training",
        )
    except (ValueError, IndexError) as exc:
        raise _explain(exc, region, version, py_version) from None


def _explain(exc: Exception, region: str, version: str, py_version: str | None) -> UsageError:
    """Turn the SDK's long ValueError into one line saying what exists."""
    from sagemaker.core import image_uris

    if version not in image_uris.list_versions("pytorch", "training"):
        return UsageError(
            f"No SageMaker PyTorch training image for framework version '{version}'.",
            f"Supported versions include {', '.join(supported_versions()[-4:])} "
            f"(the default is {DEFAULT_FRAMEWORK_VERSION}).",
        )
    pythons = image_uris.list_py_versions("pytorch", version, "training")
    if py_version not in pythons:
        return UsageError(
            f"PyTorch {version} training images are built for {', '.join(pythons) or 'no Python'}, not {py_version}.",
            "Leave the Python version unset to get the right one.",
        )
    if "region" in str(exc):
        return UsageError(
            f"No PyTorch {version} training image in region '{region}'.",
            "Use an AWS region name such as us-east-1, us-west-2 or eu-west-1.",
        )
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UsageError(f"Cannot resolve the PyTorch {version} training image: {first}")


def _is_gpu_type(instance_type: str) -> bool:
    """The SDK's rule: an instance family starting with g or p (ml.g5, ml.p4d) is a GPU type."""
    family = instance_type.removeprefix("ml.").split(".", 1)[0]
    return family[:1] in ("g", "p")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def _read_cache(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != _CACHE_SCHEMA or not isinstance(data.get("uris"), dict):
        return {}
    return data["uris"]


def _write_cache(path: Path, key: str, uri: str) -> None:
    """Add one entry: write a temporary file beside the cache, then rename it over (atomic)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        uris = {**_read_cache(path), key: uri}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"schema": _CACHE_SCHEMA, "uris": uris}, fh, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # the cache only saves time; the next launch resolves again
