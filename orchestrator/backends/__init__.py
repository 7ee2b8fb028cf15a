"""Backends run packages somewhere: ``local`` (this machine) and ``sagemaker`` (AWS training jobs).

Each backend is one folder; :data:`REGISTRY` maps a target name to its class by import
path, so choosing a backend imports only that backend, and it is the one list of targets
(settings, ``--target`` and the store's public keys derive from it). What a backend can do
is the feature protocols it implements (base.py); callers check with :func:`require`
instead of catching NotImplementedError.
"""

from __future__ import annotations

import functools
import importlib

from orchestrator.backends.base import Backend, Capability, LaunchSpec, capabilities, require, supports

REGISTRY: dict[str, str] = {
    "local": "orchestrator.backends.local:LocalBackend",
    "sagemaker": "orchestrator.backends.sagemaker:SageMakerBackend",
}

TARGETS: tuple[str, ...] = tuple(REGISTRY)


def get_backend(target: str) -> Backend:
    """A new instance of the backend registered as ``target``; UsageError naming the targets otherwise."""
    return backend_class(target)()


def backend_class(target: str) -> type:
    from orchestrator.errors import UsageError

    try:
        ref = REGISTRY[target]
    except KeyError:
        raise UsageError(f"Unknown target {target!r}.", f"Targets: {', '.join(REGISTRY)}.") from None
    module_name, _, class_name = ref.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


@functools.cache
def public_state_keys(target: str) -> tuple[str, ...]:
    """The keys of a ``target`` run's backend_state that users may read; () for an unknown target."""
    if target not in REGISTRY:
        return ()
    return tuple(backend_class(target).public_state_keys)


__all__ = [
    "Backend",
    "Capability",
    "LaunchSpec",
    "REGISTRY",
    "TARGETS",
    "backend_class",
    "capabilities",
    "get_backend",
    "public_state_keys",
    "require",
    "supports",
]
