"""`dl plot`, `dl compare`, `dl sweep`: learning curves, runs side by side, and grids of runs."""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.cli import completion, options, render
from orchestrator.cli.context import current_client
from orchestrator.cli.options import OptionalGpuCommand
from orchestrator.errors import UsageError
from orchestrator.options import LaunchOptions

commands = typer.Typer()  # added to `dl` by orchestrator/cli/__init__.py


@commands.command(no_args_is_help=True)
def plot(
    run_ids: list[str] = typer.Argument(
        ..., metavar="RUN...", help="One or more run ids.", autocompletion=completion.run_ids
    ),
    metric: str = typer.Option(None, "--metric", "-m", help="Metric to plot (default: the job's monitored one)."),
    output: Path = typer.Option(None, "--output", "-o", metavar="FILE.png", help="Write a PNG instead (matplotlib)."),
    width: int = typer.Option(78, "--width", min=30, help="Columns of the text chart."),
    height: int = typer.Option(15, "--height", min=5, help="Rows of the text chart."),
) -> None:
    """Plot learning curves (metric by epoch) of one or more runs on one chart.

    Without -o, a text chart in the terminal with a legend; with -o FILE.png, a PNG.

    \b
    [bold]Examples[/bold]
      dl plot playground-20261125-2110-a1b2
      dl plot RUN1 RUN2 RUN3 --metric val_loss
      dl plot RUN1 RUN2 -o curves.png
    """
    from orchestrator import api, plotting

    runs = [api.show(run_id, client=current_client()) for run_id in run_ids]
    if metric is None:
        metric = api.monitor_of(runs[0])[0] or "val_loss"
    data = plotting.series({run.id: api.epoch_metrics(run.id, client=current_client()) for run in runs}, metric)
    if output is None:
        typer.echo(plotting.terminal_chart(data, metric, width=width, height=height))
        return
    lines = plotting.png_chart(data, metric, output)
    typer.echo(f"Wrote {output} ({lines} curve{'s' if lines != 1 else ''} of {metric}).")


@commands.command()
def compare(
    run_ids: list[str] = typer.Argument(
        None, metavar="[RUN...]", help="Run ids to compare.", autocompletion=completion.run_ids
    ),
    sweep: str = typer.Option(
        None, "--sweep", metavar="ID", help="Every run of this sweep, best first.", autocompletion=completion.sweep_ids
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Runs side by side: the parameters that differ between them and their final metrics.

    With --sweep, the sweep's runs ranked by the job's monitored metric (best first).

    \b
    [bold]Examples[/bold]
      dl compare RUN1 RUN2
      dl compare --sweep playground-sweep-20261125-2110-a1b2
      dl compare --sweep playground-sweep-20261125-2110-a1b2 --json
    """
    from orchestrator import api

    result = api.compare(run_ids, sweep=sweep, client=current_client())
    if as_json:
        render.print_json(result.to_json())
        return
    typer.echo(comparison_table(result, ranked=bool(sweep)))


def comparison_table(result, *, ranked: bool) -> str:
    params = result.differing
    headers = (["#"] if ranked else []) + ["RUN", "STATUS"] + [p.upper() for p in params] + result.metrics
    rows = []
    for index, run in enumerate(result.runs, 1):
        cells = [str(index)] if ranked else []
        cells += [run.id, run.status.value]
        cells += [str(run.params.get(p, "-")) for p in params]
        cells += [f"{run.metrics[m]:.4g}" if m in run.metrics else "-" for m in result.metrics]
        rows.append(cells)
    text = render.table(headers, rows)
    if ranked and result.monitor:
        best = "highest" if result.mode == "max" else "lowest"
        text = f"Ranked by {result.monitor} ({best} first).\n" + text
    if not params and len(result.runs) > 1:
        text += "\n(The runs have the same parameters.)"
    return text


@commands.command(no_args_is_help=True, cls=OptionalGpuCommand)
@options.launch_options()
def sweep(
    job: str = typer.Argument(
        ...,
        metavar="JOB",
        help="Job name, path to a job folder, or a Python training script.",
        autocompletion=completion.job_names,
    ),
    script_args: list[str] = typer.Argument(
        None, metavar="[-- SCRIPT ARGS...]", help="With a script: its own arguments, first in every run."
    ),
    root: str = typer.Option(None, "--root", metavar="DIR", help="With a script: its project folder to package."),
    set_: list[str] = typer.Option(
        None, "--set", "-s", metavar="KEY=V1,V2,...", help="Values to try (comma-separated); repeatable."
    ),
    parallel: int = typer.Option(1, "--parallel", "-p", min=1, help="At most N runs unfinished at once."),
    wait: bool = typer.Option(False, "--wait", help="Wait for every run to end, then print the comparison."),
    launch_options: LaunchOptions = None,
) -> None:
    """Launch a grid of runs: every combination of the --set lists, under one sweep id.

    Runs start one after another, at most --parallel unfinished at once (dl waits for a slot).
    Rank them afterwards with `dl compare --sweep ID`.

    \b
    [bold]Examples[/bold]
      dl sweep playground --set lr=0.1,0.01,0.001 --set width=8,32
      dl sweep playground --set hidden_layers=0,1,2 --set dataset=spiral --parallel 2 --wait
      dl sweep mnist --set lr=0.01,0.001 --gpu T4 --spot --parallel 2
      dl sweep main.py --set model.lr=0.1,0.01 --local -- fit --config config.yaml
    """
    from orchestrator import api

    if not set_:
        raise UsageError("A sweep needs values to try.", f"Example: dl sweep {job} --set lr=0.1,0.01")
    grid = api.parse_grid(set_)
    size = len(api.grid_points(grid))

    def launched(run) -> None:
        if not runs_seen:
            typer.echo(f"Sweep {run.sweep}: {size} run{'s' if size != 1 else ''}, at most {parallel} at once.")
        runs_seen.append(run)
        varied = "  ".join(f"{k}={run.params[k]}" for k, v in grid.items() if len(v) > 1)
        typer.echo(f"Launched {run.id}  {varied}".rstrip())

    runs_seen: list = []
    sweep_id, runs = api.sweep(
        job,
        grid,
        parallel=parallel,
        options=launch_options,
        on_launch=launched,
        script_args=script_args,
        root=root,
        client=current_client(),
    )
    typer.echo(f"Sweep {sweep_id}: all {len(runs)} runs launched.")
    if not wait:
        typer.echo(f"  compare: dl compare --sweep {sweep_id}")
        return
    for run in runs:
        api.wait(run.id, client=current_client())
    typer.echo(comparison_table(api.compare(sweep=sweep_id, client=current_client()), ranked=True))
