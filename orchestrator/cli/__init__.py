"""The `dl` command line: thin commands over orchestrator.api.

Each command parses options, calls one API function and renders the result.
Errors a user can act on (DlError) print as one line and exit non-zero; the
traceback only with --debug or DL_DEBUG=1.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback

import click
import typer
from typer.core import TyperGroup

from orchestrator import __version__, settings
from orchestrator.backends import REGISTRY, Capability, get_backend, supports
from orchestrator.cli import compare, config, doctor, jobs, launch, runs, schedule, store
from orchestrator.errors import DlError

_ORDER = [  # the help's order; commands a backend adds (see backends) find their place here too
    "jobs", "launch", "runs", "show", "logs", "stop", "resume", "pull", "plot", "compare", "sweep", "schedule",
    "gpus", "config", "infra", "doctor", "store",
]  # fmt: skip


class _Group(TyperGroup):
    """Turns DlError (and unexpected errors) into one line on stderr and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DlError as exc:
            _report(ctx, f"Error: {exc.message}", exc.hint, exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except BrokenPipeError:  # `dl runs | head`: the reader left; say nothing more
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:  # a bug or an environment problem we did not foresee
            text = str(exc).splitlines()[0] if str(exc) else ""
            _report(ctx, f"Unexpected error: {type(exc).__name__}: {text}", "Rerun with --debug for details.", 1)


def _report(ctx: click.Context, headline: str, hint: str, code: int) -> None:
    debug = (ctx.obj or {}).get("debug") or settings.debug_enabled()
    if debug:
        traceback.print_exc()
    message = f"{headline} {hint}".strip()
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(code)


app = typer.Typer(
    cls=_Group,
    name="dl",
    help=(
        "Train PyTorch Lightning jobs on this machine or on AWS GPUs, with every run tracked.\n\n"
        "Start here:  dl jobs  ·  dl launch mnist --local --follow  ·  dl runs  ·  dl pull RUN"
    ),
    epilog="State lives in DL_HOME (default ~/.local/share/dl). Docs: README.md.",
    no_args_is_help=True,
    add_completion=True,  # dl --install-completion; arguments complete by orchestrator/cli/completion.py
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.", envvar="DL_DEBUG"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    from orchestrator.client import Client

    # One Client per command: one store connection, settings read once; closed when the command ends.
    client = Client()
    ctx.call_on_close(client.close)
    ctx.obj = {"debug": debug, "client": client}


def _add_commands() -> None:
    """Add every command to ``app`` explicitly: dl's own modules (each defines its commands on its
    own Typer, ``commands``, and imports nothing from this one, so there is no cycle and no import
    side effect), then each registered backend's (`dl infra`, `dl gpus` from sagemaker), the way
    Metaflow's plugins add their CLI groups; a backend adds them without importing its SDK.
    The help lists them in _ORDER."""
    for module in (jobs, launch, runs, compare, schedule, config, doctor, store):
        app.add_typer(module.commands)
    for target in REGISTRY:
        backend = get_backend(target)
        if supports(backend, Capability.COMMANDS):
            backend.register_commands(app)


_add_commands()


def main() -> None:
    try:
        app(prog_name="dl")
    finally:
        # Shutdown's last garbage collections walk every object still alive: with botocore's
        # service models loaded that is ~0.1 s, a quarter of a no-change `dl pull`. Frozen
        # objects are skipped; atexit handlers still run and objects are still freed.
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
