"""Launch options: where and how a run goes, declared once.

:class:`LaunchOptions` is everything `dl launch`, `dl sweep` and `dl schedule create` take
besides the job and its hyperparameters: the target, the data channels, the machine and its
limits, and a warm start. One frozen object travels from the CLI (``cli/options.py`` declares
the flags from these fields) through :func:`orchestrator.api.plan` to the backend
(``LaunchSpec.options``) and into a schedule's stored spec as versioned JSON
(:meth:`LaunchOptions.to_json` / :meth:`LaunchOptions.from_json`).

Every backend declares ``accepted_options``: the fields of its own it takes, besides
:data:`COMMON` (target, data and the warm start, which the API handles for every backend).
:func:`check_accepted` turns any other field that was given into a one-line UsageError naming
its flag and the targets that take it. Stdlib only, so the CLI can import it at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from types import MappingProxyType

from orchestrator.errors import StoreError, UsageError

# The version of the JSON that to_json writes; from_json reads it and every older one the store migrated.
VERSION = 1
# Fields every backend takes: the API resolves them (the target, the channels, a warm start as a
# channel, the package's allowed secrets).
COMMON = frozenset({"target", "data", "from_run", "from_optimizer", "allow_secrets"})
# Fields that name a machine: given without a target, they choose the one backend that has such machines.
CHOOSE_TARGET = ("gpu", "instance_type", "nodes")
# Fields that are also dl settings (config.load_settings ranks them as flags, above DL_* and dl.toml).
SETTINGS = ("gpu", "instance_type", "spot", "max_hours", "volume_gb", "framework_version", "region", "profile")


def _flag(name: str, default=None):
    return field(default=default, metadata={"flag": name})


@dataclass(frozen=True)
class LaunchOptions:
    """Where and how a run goes. A field at its default (None, no channels, no optimizer state)
    is "not given": the backend then uses dl's settings (dl.toml, DL_* variables) or its own."""

    target: str | None = _flag("--target")  # a registered backend; None: the configured default
    data: Mapping[str, str] = field(default_factory=dict, metadata={"flag": "--data"})  # channel -> folder or URI
    gpu: str | None = _flag("--gpu")  # "any", "A10G", "A100:8"
    instance_type: str | None = _flag("--instance-type")  # "ml.g5.2xlarge"
    nodes: int | None = _flag("--nodes")  # instances, torchrun across them
    spot: bool | None = _flag("--spot")  # False: --on-demand
    max_hours: float | None = _flag("--max-hours")
    volume_gb: int | None = _flag("--volume-gb")
    image: str | None = _flag("--image")  # a training image instead of the PyTorch DLC
    framework_version: str | None = _flag("--framework-version")
    region: str | None = _flag("--region")
    profile: str | None = _flag("--profile")
    from_run: str | None = _flag("--from")  # RUN[:best|:last], or SCHEDULE:best for schedules
    from_optimizer: bool = _flag("--from-optimizer", False)  # with from_run: the optimizer state too
    # Job-relative paths of files that look like secrets, packaged on purpose (packaging.build_package).
    allow_secrets: tuple[str, ...] = _flag("--allow-secret", ())

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", MappingProxyType(dict(self.data or {})))
        for name, path in self.data.items():
            if not str(path).strip():  # `--data train=` would otherwise bind the current folder
                raise UsageError(f"--data {name}= has no path.", f"Give one: --data {name}=./folder (or s3://...).")
        object.__setattr__(self, "allow_secrets", tuple(self.allow_secrets or ()))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def flag(cls, name: str, value: object = None) -> str:
        """The command-line flag of field ``name`` (``spot`` given as False: ``--on-demand``)."""
        if name == "spot" and value is False:
            return "--on-demand"
        return next(f.metadata["flag"] for f in fields(cls) if f.name == name)

    def given(self) -> dict[str, object]:
        """The fields that were given (that differ from their default), in declaration order."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            if value != default:
                out[f.name] = dict(value) if f.name == "data" else list(value) if f.name == "allow_secrets" else value
        return out

    def settings(self) -> dict[str, object]:
        """The given fields that are dl settings, for ``config.load_settings(cli=...)``."""
        return {k: v for k, v in self.given().items() if k in SETTINGS}

    def with_(self, **changes) -> LaunchOptions:
        return replace(self, **changes)

    def to_json(self) -> dict:
        """``{"version": 1, "target": ..., "data": {...}, <each given field>}``: what a schedule stores."""
        return {"version": VERSION, "target": self.target, "data": dict(self.data), **self.given()}

    @classmethod
    def from_json(cls, stored: Mapping) -> LaunchOptions:
        """Read what :meth:`to_json` wrote. A newer version or an unknown field is a StoreError:
        this dl cannot tell what the schedule asked for, so it launches nothing."""
        values = dict(stored)
        version = values.pop("version", None)
        if version != VERSION:
            raise StoreError(
                f"A schedule's launch options have version {version!r}; this dl reads version {VERSION}.",
                "Upgrade dl (a newer one wrote them), or recreate the schedule.",
            )
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise StoreError(f"A schedule's launch options hold unknown fields: {', '.join(unknown)}.",
                             "Upgrade dl (a newer one wrote them), or recreate the schedule.")  # fmt: skip
        return cls(**values)

    @classmethod
    def of(cls, options: LaunchOptions | None = None, **choices) -> LaunchOptions:
        """``options`` with ``choices`` (field name → value) on top; the API's keyword shorthand:
        ``api.launch("mnist", target="local", data={"train": "./digits"})``."""
        base = options if options is not None else cls()
        return replace(base, **choices) if choices else base


def parse_assignments(items: list[str] | None, flag: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` → ``{"a": "1", "b": "2"}``; a missing '=' is a usage error."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {item!r} is not KEY=VALUE.", f"Example: {flag} lr=0.01")
        out[key.strip()] = value
    return out


def accepting(name: str) -> list[str]:
    """The registered targets that take field ``name``."""
    from orchestrator.backends import REGISTRY, get_backend  # here: backends.base imports this module

    return [t for t in REGISTRY if name in COMMON or name in get_backend(t).accepted_options]


def refused(options: LaunchOptions, backend) -> str | None:
    """The first given field ``backend`` does not take, or None."""
    return next((n for n in options.given() if n not in COMMON and n not in backend.accepted_options), None)


def check_accepted(options: LaunchOptions, target: str, backend) -> None:
    """A given field that the ``target`` backend does not take is a UsageError naming its flag."""
    name = refused(options, backend)
    if name is None:
        return
    flag = LaunchOptions.flag(name, getattr(options, name))
    others = accepting(name)
    if not others:
        raise UsageError(f"No target takes {flag}.", "Drop it.")
    raise UsageError(
        f"{flag} is for the {' or '.join(others)} target, not {target}.", f"Drop it, or add --target {others[0]}."
    )


def implied_target(options: LaunchOptions) -> str | None:
    """The target that machine fields (``CHOOSE_TARGET``) given without one point at: the one
    registered backend taking them all; None when none of them is given or several backends would do."""
    wanted = [n for n in CHOOSE_TARGET if n in options.given()]
    if options.target or not wanted:
        return options.target
    from orchestrator.backends import REGISTRY, get_backend

    fits = [t for t in REGISTRY if all(n in get_backend(t).accepted_options for n in wanted)]
    return fits[0] if len(fits) == 1 else None
