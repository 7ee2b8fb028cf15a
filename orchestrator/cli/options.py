"""Option parsing shared by several commands: the launch options, declared once."""

from __future__ import annotations

import functools
import inspect

import typer
from typer.core import TyperCommand

from orchestrator.backends import get_backend
from orchestrator.cli import completion
from orchestrator.errors import UsageError
from orchestrator.options import LaunchOptions, accepting, implied_target, parse_assignments, refused


class OptionalGpuCommand(TyperCommand):
    """Lets ``--gpu`` stand alone (``dl launch mnist --gpu``): it then means "any one GPU"."""

    def parse_args(self, ctx, args):
        fixed: list[str] = []
        for i, arg in enumerate(args):
            fixed.append(arg)
            if arg == "--gpu" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                fixed.append("any")
        return super().parse_args(ctx, fixed)


SET = typer.Option(None, "--set", "-s", metavar="KEY=VALUE", help="Hyperparameter; repeatable.")
_FROM_HELP = ("RUN[:best|:last]", "Start from another run's checkpoint (weights).")


def _declarations(local_help: str, from_help: tuple[str, str]) -> list[tuple[str, type, object]]:
    """(parameter, type, typer.Option) for ``--local`` and every LaunchOptions field, in help order."""

    def opt(name: str, kind: type, default=None, *extra: str, **details) -> tuple[str, type, object]:
        decls = extra if name == "spot" else (LaunchOptions.flag(name), *extra)
        return name, kind, typer.Option(default, *decls, **details)

    return [
        ("local", bool, typer.Option(False, "--local", help=local_help)),
        opt("target", str, metavar="TARGET", help="local or sagemaker (default from config)."),
        opt("data", list[str], None, "-d", metavar="CHANNEL=PATH",
            help="Data channel: a folder, or s3:// for sagemaker."),
        opt("gpu", str, metavar="[MODEL[:N]]", help="GPU on SageMaker: alone = cheapest 1-GPU; A10G, T4, A100:8..."),
        opt("instance_type", str, metavar="TYPE", help="Exact type, e.g. ml.g5.2xlarge."),
        opt("nodes", int, min=1, help="Instances (torchrun across them)."),
        opt("spot", bool, None, "--spot/--on-demand", help="Managed spot capacity (default from config)."),
        opt("max_hours", float, min=0.02, help="Stop each job after this many hours."),
        opt("volume_gb", int, min=1, help="Disk per instance, GB."),
        opt("image", str, metavar="URI", help="Training image instead of the PyTorch DLC."),
        opt("framework_version", str, metavar="VER", help="PyTorch DLC version."),
        opt("region", str, metavar="REGION", help="AWS region (default from config)."),
        opt("profile", str, metavar="NAME", help="AWS profile."),
        opt("from_run", str, metavar=from_help[0], help=from_help[1], autocompletion=completion.run_ids),
        opt("from_optimizer", bool, False, help="With --from: the optimizer state too."),
        opt("allow_secrets", list[str], None, metavar="PATH",
            help="Package this file that looks like a secret, on purpose; repeatable."),
    ]  # fmt: skip


def launch_options(*, local_help: str = "Run on this machine.", from_help: tuple[str, str] = _FROM_HELP):
    """Decorate a Typer command so it takes every launch option, declared here once.

    The command names one parameter of type LaunchOptions; in its place the command line gets
    ``--local`` and one flag per LaunchOptions field, and the command receives them as one
    LaunchOptions (target chosen by :func:`choose_target`, channels parsed). A field added to
    LaunchOptions without a flag here fails at import, so the commands cannot drift apart."""
    declared = _declarations(local_help, from_help)
    missing = set(LaunchOptions.names()) - {name for name, _, _ in declared}
    if missing:
        raise TypeError(f"launch options without a flag: {sorted(missing)}")

    def decorate(command):
        signature = inspect.signature(command)
        slot = next(n for n, p in signature.parameters.items() if p.annotation in ("LaunchOptions", LaunchOptions))
        params: list[inspect.Parameter] = []
        for name, param in signature.parameters.items():
            if name != slot:
                params.append(param)
                continue
            params += [inspect.Parameter(n, param.kind, default=opt, annotation=kind)
                       for n, kind, opt in declared]  # fmt: skip

        @functools.wraps(command)
        def wrapper(**kwargs):
            given = {n: kwargs.pop(n) for n, _, _ in declared}
            kwargs[slot] = from_flags(**given)
            return command(**kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def from_flags(*, local: bool, data: list[str] | None, **values) -> LaunchOptions:
    """The LaunchOptions that a command's flags say (``from_optimizer`` False: not given)."""
    options = LaunchOptions(data=parse_assignments(data, "--data"), **values)
    return choose_target(local, options)


def choose_target(local: bool, options: LaunchOptions) -> LaunchOptions:
    """The options with the target the flags ask for: --local, else --target, else the one target
    that machine flags (--gpu, --instance-type, --nodes) point at, else None (config's)."""
    target = options.target
    if local and target and target != "local":
        raise UsageError(f"--local and --target {target} contradict each other.", "Pick one.")
    if local:
        name = refused(options, get_backend("local"))
        if name is not None:
            flag = LaunchOptions.flag(name, getattr(options, name))
            targets = " or ".join(accepting(name))
            raise UsageError(f"{flag} is for the {targets} target, not --local.", "Drop one of them.")
        return options.with_(target="local")
    return options.with_(target=implied_target(options))
