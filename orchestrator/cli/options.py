"""Option parsing shared by several commands."""

from __future__ import annotations

import typer
from typer.core import TyperCommand


class OptionalGpuCommand(TyperCommand):
    """Lets ``--gpu`` stand alone (``dl launch mnist --gpu``): it then means "any one GPU"."""

    def parse_args(self, ctx, args):
        fixed: list[str] = []
        for i, arg in enumerate(args):
            fixed.append(arg)
            if arg == "--gpu" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                fixed.append("any")
        return super().parse_args(ctx, fixed)


# The launch options that `dl launch`, `dl schedule create` and `dl sweep` share.
TARGET = typer.Option(None, "--target", metavar="TARGET", help="local or sagemaker (default from config).")
SET = typer.Option(None, "--set", "-s", metavar="KEY=VALUE", help="Hyperparameter; repeatable.")
DATA = typer.Option(
    None, "--data", "-d", metavar="CHANNEL=PATH", help="Data channel: a folder, or s3:// for sagemaker."
)
GPU = typer.Option(
    None, "--gpu", metavar="[MODEL[:N]]", help="GPU on SageMaker: alone = cheapest 1-GPU; A10G, T4, A100:8..."
)
INSTANCE_TYPE = typer.Option(None, "--instance-type", metavar="TYPE", help="Exact type, e.g. ml.g5.2xlarge.")
NODES = typer.Option(None, "--nodes", min=1, help="Instances (torchrun across them).")
SPOT = typer.Option(None, "--spot/--on-demand", help="Managed spot capacity (default from config).")
MAX_HOURS = typer.Option(None, "--max-hours", min=0.02, help="Stop each job after this many hours.")
VOLUME_GB = typer.Option(None, "--volume-gb", min=1, help="Disk per instance, GB.")
IMAGE = typer.Option(None, "--image", metavar="URI", help="Training image instead of the PyTorch DLC.")
FRAMEWORK_VERSION = typer.Option(None, "--framework-version", metavar="VER", help="PyTorch DLC version.")
REGION = typer.Option(None, "--region", metavar="REGION", help="AWS region (default from config).")
PROFILE = typer.Option(None, "--profile", metavar="NAME", help="AWS profile.")
FROM_OPTIMIZER = typer.Option(False, "--from-optimizer", help="With --from: the optimizer state too.")
ALLOW_SECRET = typer.Option(
    None, "--allow-secret", metavar="PATH", help="Package this file that looks like a secret, on purpose; repeatable."
)


def choose_target(local: bool, target: str | None, **cloud: object) -> str | None:
    """The target a command's flags ask for: --local, else --target, else sagemaker when a
    cloud-only flag (``cloud``: gpu=..., instance_type=..., nodes=...) is given, else None (config's)."""
    from orchestrator.errors import UsageError

    flags = ["--" + name.replace("_", "-") for name, value in cloud.items() if value]
    if local and target and target != "local":
        raise UsageError(f"--local and --target {target} contradict each other.", "Pick one.")
    if local and flags:
        raise UsageError(f"{flags[0]} is for the sagemaker target, not --local.", "Drop one of them.")
    return "local" if local else target or ("sagemaker" if flags else None)
