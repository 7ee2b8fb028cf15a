"""`dl runs`, `dl show`, `dl logs`, `dl stop`, `dl pull`: everything about runs that exist."""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.cli import completion, render
from orchestrator.cli.context import current_client
from orchestrator.errors import UsageError

commands = typer.Typer()  # added to `dl` by orchestrator/cli/__init__.py


@commands.command()
def runs(
    job: str = typer.Option(None, "--job", "-j", help="Only runs of this job.", autocompletion=completion.job_names),
    status: str = typer.Option(None, "--status", help="Only runs in this status, e.g. Completed."),
    target: str = typer.Option(None, "--target", help="Only runs on this target."),
    failure_kind: str = typer.Option(
        None, "--failure-kind", metavar="KIND", help="Only runs that did not complete for this reason, e.g. capacity."
    ),
    limit: int = typer.Option(20, "--limit", "-n", min=0, help="Show at most N runs, newest first (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array of runs."),
    sync: bool = typer.Option(False, "--sync", help="First import the runs cloud schedules started (found in AWS)."),
    sync_all: bool = typer.Option(
        False, "--all", help="With --sync: import every run dl started in the cloud (dl-tagged SageMaker jobs)."
    ),
    sort: str = typer.Option(
        None, "--sort", metavar="METRIC[:asc]", help="Rank by a final metric, highest first (:asc lowest first)."
    ),
) -> None:
    """List runs, newest first, or ranked by a final metric (--sort; runs without it last).

    \b
    [bold]Examples[/bold]
      dl runs
      dl runs --job mnist --status Completed -n 5
      dl runs --failure-kind out_of_memory
      dl runs --job playground --sort val_acc
      dl runs --sort val_loss:asc -n 3
      dl runs --json | jq '.[0].metrics'
      dl runs --sync
      dl runs --sync --all
    """
    from orchestrator import api

    if sync_all and not sync:
        raise UsageError("--all goes with --sync.", "Run: dl runs --sync --all")
    if sync:
        from orchestrator import scheduling

        imported = scheduling.sync(current_client())
        if imported:
            typer.echo(f"Imported {len(imported)} run(s) started by schedules.", err=True)
    if sync_all:
        ids, notes = api.import_runs()
        if ids:
            typer.echo(f"Imported {len(ids)} run(s) dl started elsewhere.", err=True)
        for note in notes:
            typer.echo(f"Note: {note}", err=True)
    found = api.list_runs(
        job=job,
        status=status,
        target=target,
        limit=limit or None,
        sort=sort,
        failure_kind=failure_kind,
        client=current_client(),
    )
    if as_json:
        render.print_json([run.to_json() for run in found])
    elif not found:
        typer.echo("No runs yet. Start one with: dl launch mnist --local")
    else:
        typer.echo(render.runs_table(found))


@commands.command(no_args_is_help=True)
def show(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id (see `dl runs`).", autocompletion=completion.run_ids),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Show one run: status, parameters, metrics, and where its logs, checkpoints and model are.

    \b
    [bold]Examples[/bold]
      dl show mnist-20261125-1930-a1b2
      dl show mnist-20261125-1930-a1b2 --json
    """
    from orchestrator import api

    run = api.show(run_id, client=current_client())
    if as_json:
        render.print_json(
            {
                **run.to_json(),
                "best": api.best_epoch(run, client=current_client()),
                "checkpoint_manifest": api.checkpoints(run, client=current_client()),
            }
        )
        return
    rows = [
        ("Run", run.id),
        ("Job", f"{run.job}  ({run.job_dir})" if run.job_dir else run.job),
        ("Target", run.target),
        ("Status", render.status_text(run.status)),
    ]
    if run.failure_reason:
        rows.append(("Failure", run.failure_reason))
    if run.failure_kind:
        rows.append(("Kind", f"{run.failure_kind.value}: {run.failure_kind.fix(run.id, run.job)}"))
    commit = "-"
    if run.git_commit:
        commit = run.git_commit[:12] + (" (uncommitted changes)" if run.git_dirty else "")
    rows += [
        ("Created", render.when(run.created_at)),
        ("Started", render.when(run.started_at)),
        ("Ended", render.when(run.ended_at)),
        ("Duration", render.duration(run.duration)),
        ("Package", (run.package_hash or "-")[:12]),
        ("Git", commit),
    ]
    for key, title in (("log_uri", "Logs"), ("checkpoint_uri", "Checkpoints"), ("model_uri", "Model")):
        rows.append((title, getattr(run, key) or "-"))
    rows += _cloud_rows(run.backend_state)
    if run.schedule:
        rows.append(("Schedule", run.schedule))
    if run.promotion:
        verdict = "promoted to best" if run.promotion.get("promoted") else "not promoted"
        rows.append(("Promotion", f"{verdict}: {run.promotion.get('reason', '')}".rstrip(": ")))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key.ljust(width)}  {value}")
    _section("Parameters", run.params)
    _section("Metrics (final)", {k: f"{v:.6g}" for k, v in run.metrics.items()})
    best = api.best_epoch(run, client=current_client())
    if best:
        where = f"epoch {best['epoch'] + 1} (step {best['step']})"
        typer.echo(f"\nBest      {best['metric']}={best['value']:.6g} at {where}")
    if run.data:
        _section("Data", run.data)
    entries = api.checkpoints(run, client=current_client())
    if entries:
        typer.echo("\nCheckpoints")
        rows = []
        for e in entries:
            value = f"{e['monitor']}={e['value']:.4g}" if e.get("monitor") and e.get("value") is not None else "-"
            rows.append([e["file"], str(e["epoch"]), str(e["step"]), value, render.size(e["size"]),
                         e["written_at"], e["sha256"][:12]])  # fmt: skip
        headers = ["FILE", "EPOCH", "STEP", "METRIC", "SIZE", "WRITTEN", "SHA256"]
        typer.echo("  " + render.table(headers, rows).replace("\n", "\n  "))
    warning = api.stale_checkpoint_warning(run, entries)
    if warning:
        typer.secho(f"\nWarning: {warning}", fg="yellow")


def _cloud_rows(state: dict) -> list[tuple[str, str]]:
    rows = []
    if state.get("instance_type"):
        nodes = state.get("nodes") or 1
        spot = ", spot" if state.get("spot") else ""
        rows.append(("Instance", f"{nodes} x {state['instance_type']} in {state.get('region', '?')}{spot}"))
    if state.get("secondary_status"):
        rows.append(("Phase", state["secondary_status"]))
    if state.get("billable_seconds") is not None:
        cost = f"${state.get('cost_usd', 0.0):.2f} estimated for {render.duration(state['billable_seconds'])} billed"
        if state.get("spot_savings"):
            cost += f" (spot saved {state['spot_savings']:.0%})"
        rows.append(("Cost", cost))
    return rows


def _section(title: str, values: dict) -> None:
    if not values:
        return
    typer.echo(f"\n{title}")
    width = max(len(k) for k in values)
    for key, value in values.items():
        typer.echo(f"  {key.ljust(width)}  {value}")


@commands.command(no_args_is_help=True)
def logs(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id.", autocompletion=completion.run_ids),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
) -> None:
    """Print a run's log (the training program's output).

    \b
    [bold]Examples[/bold]
      dl logs mnist-20261125-1930-a1b2
      dl logs mnist-20261125-1930-a1b2 --follow
    """
    from orchestrator import api

    try:
        for chunk in api.logs(run_id, follow=follow, client=current_client()):
            typer.echo(chunk, nl=False)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@commands.command(no_args_is_help=True)
def stop(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id.", autocompletion=completion.live_run_ids),
    grace: float = typer.Option(60.0, "--grace", min=0, help="Seconds to wait for a checkpoint before killing."),
) -> None:
    """Stop a run gracefully: it saves last.ckpt and ends as Stopped.

    After --grace seconds the run's processes are killed. Stopping a finished run does nothing.

    \b
    [bold]Examples[/bold]
      dl stop mnist-20261125-1930-a1b2
    """
    from orchestrator import api

    before = api.show(run_id, client=current_client())
    if before.status.is_terminal:
        why = f": {before.failure_reason}" if before.failure_reason else ""
        typer.echo(f"{before.id} already ended ({before.status.value}{why}); nothing to stop.")
        return
    run = api.stop(run_id, grace=grace, client=current_client())
    if run.status.value == "Completed":
        typer.echo(f"{run.id} Completed: its training had finished before the stop took effect.")
    elif run.status.is_terminal:
        typer.echo(f"{run.id} {run.status.value}. Resume later from its last checkpoint.")
    else:
        typer.echo(f"{run.id} {run.status.value}: its processes did not end yet; see `dl show {run.id}`.")


@commands.command(no_args_is_help=True)
def resume(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id.", autocompletion=completion.run_ids),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream the log; exit with the run's outcome."),
) -> None:
    """Continue a Failed or Stopped local run from its last checkpoint.

    Same package, parameters and checkpoint folder: the step count goes on from the checkpoint.
    A Completed run is left as it is.

    \b
    [bold]Examples[/bold]
      dl resume mnist-20261125-1930-a1b2
      dl resume mnist-20261125-1930-a1b2 --follow
    """
    from orchestrator import api

    run, started = api.resume(run_id, client=current_client())
    if not started:
        typer.echo(f"{run.id} already Completed; nothing to resume.")
        return
    attempt = run.backend_state.get("attempts", 2)
    typer.echo(f"Resumed {run.id} (attempt {attempt}) from its last checkpoint.")
    if follow:
        from orchestrator.cli.launch import follow_run

        follow_run(run.id)


@commands.command(no_args_is_help=True)
def pull(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id.", autocompletion=completion.run_ids),
    to: Path = typer.Option(None, "--to", help="Destination folder (default ./RUN)."),
    best: bool = typer.Option(False, "--best", help="The best checkpoint (the default)."),
    last: bool = typer.Option(False, "--last", help="The last checkpoint."),
    all_: bool = typer.Option(False, "--all", help="Every checkpoint, the model and the metrics."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be transferred; transfer nothing."),
) -> None:
    """Bring a run's model and checkpoints to this machine.

    The model always comes along (model.ckpt: final weights and hyperparameters); pulled
    checkpoints load with the job's LightningModule.load_from_checkpoint. Files already
    here and unchanged are skipped; an interrupted pull continues where it stopped.

    \b
    [bold]Examples[/bold]
      dl pull mnist-20261125-1930-a1b2
      dl pull mnist-20261125-1930-a1b2 --last --to ./ckpts
      dl pull mnist-20261125-1930-a1b2 --all --dry-run
    """
    from orchestrator import api

    if sum((best, last, all_)) > 1:
        raise UsageError("--best, --last and --all exclude each other.", "Pick one.")
    which = "all" if all_ else "last" if last else "best"
    result = api.pull(run_id, to=to, which=which, dry_run=dry_run, client=current_client())
    if dry_run:
        for item in result.planned:
            size = render.size(item.artifact.size) if item.artifact.size is not None else "?"
            typer.echo(f"  {item.artifact.location} -> {item.dest}  ({size})")
        typer.echo(
            f"Would pull {len(result.planned)} file{'s' if len(result.planned) != 1 else ''} into {result.dest}."
        )
        return
    for path in result.fetched + result.unpacked:
        typer.echo(f"  {path}  ({render.size(path.stat().st_size)})")
    for path, why in result.redone.items():
        typer.echo(f"Unpacked {path.name} again: {why}.")
    for note in result.notes:
        typer.echo(note)
    summary = (
        f"Pulled {len(result.fetched)} file{'s' if len(result.fetched) != 1 else ''} ({render.size(result.bytes)})"
    )
    if result.skipped:
        summary += f", {len(result.skipped)} already here and unchanged"
    if result.resumed_bytes:
        summary += f", continued {render.size(result.resumed_bytes)} from an earlier pull"
    typer.echo(f"{summary} into {result.dest}.")
