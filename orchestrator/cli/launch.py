"""`dl launch`: package a job and run it (or, with --dry-run, show the plan and smoke-test it)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from orchestrator import api
from orchestrator.cli import app, render
from orchestrator.errors import UsageError


@app.command(no_args_is_help=True)
def launch(
    job: str = typer.Argument(..., metavar="JOB", help="Job name (see `dl jobs`) or path to a job folder."),
    local: bool = typer.Option(False, "--local", help="Run on this machine (the default target)."),
    target: str = typer.Option(None, "--target", metavar="TARGET", help="Where to run: local.", envvar="DL_TARGET"),
    set_: list[str] = typer.Option(
        None, "--set", "-s", metavar="KEY=VALUE", help="Hyperparameter KEY=VALUE; repeatable."
    ),
    data: list[str] = typer.Option(
        None, "--data", "-d", metavar="CHANNEL=PATH", help="Data channel CHANNEL=PATH; repeatable."
    ),
    name: str = typer.Option(None, "--name", metavar="NAME", help="Run id to use instead of a generated one."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream the log; exit with the run's outcome."),
    detach: bool = typer.Option(False, "--detach", help="Return at once with the run id (the default)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan and smoke-test the code; start nothing."),
    no_smoke: bool = typer.Option(False, "--no-smoke-test", help="With --dry-run: skip the smoke test."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (the run, or the plan)."),
) -> None:
    """Package JOB and run it.

    Detached by default: prints the run id and returns; the run survives this terminal.

    \b
    [bold]Examples[/bold]
      dl launch mnist --local --follow
      dl launch mnist --set lr=0.001 --set max_epochs=5
      dl launch mnist --data train=./mnist-idx/ --name digits-v2
      dl launch ./my_job --dry-run
    """
    if follow and detach:
        raise UsageError("--follow and --detach exclude each other.", "Pick one.")
    if local and target and target != "local":
        raise UsageError(f"--local and --target {target} contradict each other.", "Pick one.")
    chosen = "local" if local else (target or api.DEFAULT_TARGET)
    overrides = api.parse_assignments(set_, "--set")
    channels = api.parse_assignments(data, "--data")
    if dry_run:
        _dry_run(job, chosen, overrides, channels, smoke=not no_smoke, as_json=as_json)
        return
    plan = api.plan(job, target=chosen, overrides=overrides, data=channels)
    if plan.package.secrets:
        typer.secho(
            f"Left out of the package (likely secrets): {', '.join(plan.package.secrets)}", fg="yellow", err=True
        )
    run = api.start(plan, name=name)
    if as_json and not follow:
        render.print_json(run.to_json())
        return
    typer.echo(f"Launched {run.id}  ({run.job} on {run.target}, package {(run.package_hash or '')[:12]})")
    if not follow:
        typer.echo(f"  follow:  dl logs {run.id} --follow\n  status:  dl show {run.id}")
        return
    _follow(run.id)


def _follow(run_id: str) -> None:
    try:
        for chunk in api.logs(run_id, follow=True):
            typer.echo(chunk, nl=False)
    except KeyboardInterrupt:
        typer.echo(f"\nStopped following; the run goes on. Stop it with: dl stop {run_id}", err=True)
        raise typer.Exit(130) from None
    run = api.show(run_id)
    line = f"{run.id} {run.status.value} in {render.duration(run.duration)}"
    if run.metrics:
        line += f": {render.metrics_text(run.metrics, limit=5)}"
    if run.failure_reason:
        line += f": {run.failure_reason}"
    typer.secho(line, fg="green" if run.status.value == "Completed" else "red", err=run.status.value != "Completed")
    if run.status.value != "Completed":
        raise typer.Exit(1)


def _dry_run(job: str, target: str, overrides: dict, channels: dict, *, smoke: bool, as_json: bool) -> None:
    plan = api.plan(job, target=target, overrides=overrides, data=channels)
    result = None
    if smoke:
        if not as_json:
            _print_plan(plan)
            typer.echo("\nSmoke test: one train and one validation batch through the container contract ...")
        with tempfile.TemporaryDirectory(prefix="dl-dry-run-") as workdir:
            result = api.smoke_test(plan, Path(workdir))
    elif not as_json:
        _print_plan(plan)
    if as_json:
        out = _plan_json(plan)
        out["smoke_test"] = None if result is None else {
            "ok": result.ok, "seconds": round(result.seconds, 2), "error": result.error
        }  # fmt: skip
        render.print_json(out)
    elif result is not None and result.ok:
        typer.secho(f"Smoke test passed in {result.seconds:.1f}s. Nothing was started.", fg="green")
    elif result is not None:
        typer.echo(_tail(result.log, 15), err=True)
    if result is not None and not result.ok:
        typer.secho(f"Smoke test failed: {result.error}", fg="red", err=True)
        raise typer.Exit(1)


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _plan_json(plan: api.Plan) -> dict:
    return {
        "job": plan.job.name,
        "target": plan.target,
        "params": plan.params,
        "data": plan.data,
        "package": {
            "sha256": plan.package.sha256,
            "path": str(plan.package.path),
            "size": plan.package.size,
            "files": [{"name": f.name, "size": f.size} for f in plan.package.files],
            "excluded": plan.package.excluded,
            "secrets_excluded": plan.package.secrets,
        },
        "resources": plan.resources,
        "outputs": plan.outputs,
        "cost_per_hour_usd": 0.0,
    }


def _print_plan(plan: api.Plan) -> None:
    pkg = plan.package
    typer.secho(f"Dry run: {plan.job.name} on {plan.target}. Nothing will be started.", bold=True)
    typer.echo(f"\nPackage   {pkg.short_hash}  {len(pkg.files)} files, {render.size(pkg.size)} compressed")
    typer.echo(f"          {pkg.path}")
    for item in pkg.files:
        typer.echo(f"            {item.name}  ({render.size(item.size)})")
    if pkg.excluded:
        typer.echo(f"Excluded  {', '.join(pkg.excluded)}")
    if pkg.secrets:
        typer.secho(f"Left out (likely secrets): {', '.join(pkg.secrets)}", fg="yellow")
    typer.echo("\nHyperparameters")
    width = max(len(k) for k in plan.params)
    for key, value in plan.params.items():
        typer.echo(f"  {key.ljust(width)}  {value}")
    typer.echo("\nData")
    if plan.data:
        for name, path in plan.data.items():
            typer.echo(f"  {name}  {path}")
    else:
        typer.echo("  (no channels: the job uses its built-in default data)")
    gpus = plan.resources.get("gpus") or 0
    typer.echo(
        f"\nResources this machine: {plan.resources.get('cpus')} CPUs, {gpus or 'no'} GPU{'s' if gpus != 1 else ''}"
    )
    typer.echo(f"Outputs   {plan.outputs}/{{model,checkpoints,output}}")
    typer.echo("Cost      $0.00 (local)")
