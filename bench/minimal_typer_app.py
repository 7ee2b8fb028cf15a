"""The fair baseline for `dl --help`: a minimal two-command Typer app with Typer's defaults,
shell completion on (as dl has it: --install-completion and --show-completion).

Run by the same Python, in the same venv, as dl (so the same typer, click and rich).
"""

import typer

app = typer.Typer(help="A minimal two-command Typer app.", add_completion=True)


@app.command()
def hello(name: str = typer.Argument("world", help="Who to greet.")) -> None:
    """Say hello."""
    typer.echo(f"Hello {name}")


@app.command()
def goodbye(name: str = typer.Argument("world"), formal: bool = typer.Option(False, help="Formal.")) -> None:
    """Say goodbye."""
    typer.echo(f"{'Farewell' if formal else 'Bye'} {name}")


if __name__ == "__main__":
    app()
