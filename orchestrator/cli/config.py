"""`dl config`: the project settings in effect and where each comes from; `set`, `unset`, `path`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from orchestrator.cli import render

if TYPE_CHECKING:
    from orchestrator import config

commands = typer.Typer()  # added to `dl` by orchestrator/cli/__init__.py

config_app = typer.Typer(invoke_without_command=True, no_args_is_help=False, rich_markup_mode="rich")
commands.add_typer(config_app, name="config")


@config_app.callback()
def show(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the settings, their sources and the file as JSON."),
) -> None:
    """Show project settings and where each comes from; change them with `set` and `unset`.

    Precedence: flag > DL_* variable > dl.toml (nearest from here up, or DL_CONFIG) > default.

    AWS_REGION and AWS_DEFAULT_REGION rank below dl.toml; AWS_PROFILE above it (README: Settings).

    \b
    [bold]Examples[/bold]
      dl config
      dl config --json | jq -r .bucket
      dl config set aws.bucket acme-dl
    """
    from orchestrator import config

    if ctx.invoked_subcommand:
        return
    settings = config.load_settings()
    if as_json:
        render.print_json(settings.to_json())
        return
    where = settings.config_path or f"none: no {config.FILE_NAME} in {Path.cwd()} or above; defaults apply"
    typer.echo(f"Config file  {where}")
    typer.echo(render.table(["KEY", "VALUE", "FROM"], _rows(settings)))
    typer.echo(f"Credentials  {config.credentials_source(settings)}")
    for hint in _hints(settings):
        typer.secho(hint, fg="yellow")


def _shown(value: object) -> str:
    if value is None:
        return "-"
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _from(source: str) -> str:
    from orchestrator import config

    return config.FILE_NAME if source.startswith(f"{config.FILE_NAME} (") else source


def _rows(settings: config.Settings) -> list[list[str]]:
    from orchestrator import config

    rows = []
    for name, field in config.FIELDS.items():
        rows.append([f"{field.section}.{name}", _shown(getattr(settings, name)), _from(settings.sources[name])])
        if name == "stack_name":  # the last of [aws]
            rows.append(["aws.endpoint_url", _shown(settings.endpoint_url), settings.sources["endpoint_url"]])
    tag_source = _from(settings.sources["tags"])
    rows += [[f"tags.{key}", value, tag_source] for key, value in settings.tags.items()] or [["tags", "-", "default"]]
    return rows


def _hints(settings: config.Settings) -> list[str]:
    hints = []
    if settings.config_path is None:
        hints.append("`dl config set aws.bucket NAME` or `dl infra deploy` creates a dl.toml here.")
    missing = [f"aws.{name}" for name in ("bucket", "role_arn") if getattr(settings, name) is None]
    if settings.target == "sagemaker" and missing:
        hints.append(f"The sagemaker target needs {' and '.join(missing)}: run `dl infra deploy`.")
    return hints


@config_app.command("set", no_args_is_help=True)
def set_(
    key: str = typer.Argument(..., metavar="SECTION.KEY", help="e.g. aws.bucket, defaults.spot, tags.team."),
    value: str = typer.Argument(..., metavar="VALUE", help='The value; "" for an empty string.'),
) -> None:
    """Set one setting in dl.toml (the nearest one, or a new one here), keeping the rest of the file.

    \b
    [bold]Examples[/bold]
      dl config set aws.bucket acme-dl
      dl config set defaults.target sagemaker
      dl config set defaults.spot true
      dl config set tags.team vision
    """
    from orchestrator import config

    section, name, parsed = config.coerce(key, value)
    path = config.write_settings({section: {name: parsed}})
    typer.echo(f"Set {section}.{name} = {config.toml_value(parsed)} in {path}")
    if section != "tags":
        source = config.load_settings().sources[name]
        if not source.startswith(config.FILE_NAME):
            typer.secho(f"Note: {source} overrides it in this shell.", fg="yellow")


@config_app.command(no_args_is_help=True)
def unset(key: str = typer.Argument(..., metavar="SECTION.KEY", help="e.g. defaults.gpu, tags.team.")) -> None:
    """Remove one setting from dl.toml, so that its default (or a variable) applies again.

    \b
    [bold]Examples[/bold]
      dl config unset defaults.gpu
    """
    from orchestrator import config

    section, name = config.split_key(key)
    path = config.find_config()
    if path is None:
        typer.echo(f"No {config.FILE_NAME} found; nothing to unset.")
        return
    config.write_settings({section: {name: None}}, path=path)
    typer.echo(f"Removed {key} from {path}")


@config_app.command()
def path() -> None:
    """Print the path of the dl.toml in effect; exit 1 when there is none.

    \b
    [bold]Examples[/bold]
      dl config path
      $EDITOR "$(dl config path)"
    """
    from orchestrator import config

    found = config.find_config()
    if found is None:
        typer.echo(f"No {config.FILE_NAME} in {Path.cwd()} or above.", err=True)
        raise typer.Exit(1)
    typer.echo(str(found))
