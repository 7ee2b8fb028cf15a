"""Option parsing shared by several commands."""

from __future__ import annotations

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
