"""Backends run packages somewhere: ``local`` (this machine) and ``sagemaker`` (AWS training jobs).

Each backend is one folder; the registry maps a target name to its class by
import path, so choosing a backend imports only that backend. What a backend
can do is declared in ``capabilities``; callers check it instead of catching
NotImplementedError.
"""

from __future__ import annotations

import importlib

from orchestrator.backends.base import Backend, Capability, LaunchSpec

REGISTRY: dict[str, str] = {
    "local": "orchestrator.backends.local:LocalBackend",
    "sagemaker": "orchestrator.backends.sagemaker:SageMakerBackend",
}


def get_backend(target: str) -> Backend:
    from orchestrator.errors import UsageError

    try:
        ref = REGISTRY[target]
    except KeyError:
        raise UsageError(f"Unknown target {target!r}.", f"Targets: {', '.join(REGISTRY)}.") from None
    module_name, _, class_name = ref.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


__all__ = ["Backend", "Capability", "LaunchSpec", "REGISTRY", "get_backend"]
