"""`dl launch`: package a job and run it (or, with --dry-run, show the plan and smoke-test it)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from orchestrator.cli import completion, options, render
from orchestrator.cli.context import current_client
from orchestrator.cli.options import OptionalGpuCommand
from orchestrator.errors import UsageError
from orchestrator.options import LaunchOptions, parse_assignments

if TYPE_CHECKING:
    from orchestrator import api


commands = typer.Typer()  # added to `dl` by orchestrator/cli/__init__.py


@commands.command(no_args_is_help=True, cls=OptionalGpuCommand)
@options.launch_options()
def launch(
    job: str = typer.Argument(
        ...,
        metavar="JOB",
        help="Job name (see `dl jobs`), path to a job folder, or a Python training script.",
        autocompletion=completion.job_names,
    ),
    script_args: list[str] = typer.Argument(
        None, metavar="[-- SCRIPT ARGS...]", help="With a script: its own arguments, verbatim."
    ),  # fmt: skip
    root: str = typer.Option(None, "--root", metavar="DIR", help="With a script: its project folder to package."),
    set_: list[str] = options.SET,
    launch_options: LaunchOptions = None,
    name: str = typer.Option(None, "--name", metavar="NAME", help="Run id to use instead of a generated one."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream the log; exit with the run's outcome."),
    detach: bool = typer.Option(False, "--detach", help="Return at once with the run id (the default)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan and smoke-test the code; start nothing."),
    no_smoke: bool = typer.Option(False, "--no-smoke-test", help="With --dry-run: skip the smoke test."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (the run, or the plan)."),
) -> None:
    """Package JOB and run it, here or as a SageMaker training job.

    Detached by default: prints the run id and returns; the run goes on without this terminal.
    --gpu, --instance-type and --nodes imply --target sagemaker.

    \b
    [bold]Examples[/bold]
      dl launch mnist --local --follow
      dl launch mnist --set lr=0.001 --set max_epochs=5
      dl launch mnist --data train=./mnist-idx/ --name digits-v2
      dl launch mnist --gpu A10G --spot --max-hours 2
      dl launch mnist --gpu A100:8 --nodes 2 --data train=s3://bucket/mnist/
      dl launch mnist --from mnist-20261125-1930-a1b2:best --set lr=0.0005
      dl launch ./my_job --gpu --dry-run
      dl launch train.py --local -- fit --config cfg.yaml --trainer.max_epochs 5
    """
    from orchestrator import api

    if follow and detach:
        raise UsageError("--follow and --detach exclude each other.", "Pick one.")
    plan = api.plan(
        job,
        overrides=parse_assignments(set_, "--set"),
        options=launch_options,
        script_args=script_args,
        root=root,
        client=current_client(),
    )
    render.package_notes(plan.package)
    if dry_run:
        _dry_run(plan, smoke=not no_smoke, as_json=as_json)
        return
    run = api.start(plan, name=name, client=current_client())
    if as_json and not follow:
        render.print_json(run.to_json())
        return
    typer.echo(f"Launched {run.id}  ({run.job} on {run.target}, package {(run.package_hash or '')[:12]})")
    if not follow:
        typer.echo(f"  follow:  dl logs {run.id} --follow\n  status:  dl show {run.id}")
        return
    follow_run(run.id)


def follow_run(run_id: str) -> None:
    from orchestrator import api

    try:
        for chunk in api.logs(run_id, follow=True, client=current_client()):
            typer.echo(chunk, nl=False)
    except KeyboardInterrupt:
        typer.echo(f"\nStopped following; the run goes on. Stop it with: dl stop {run_id}", err=True)
        raise typer.Exit(130) from None
    run = api.show(run_id, client=current_client())
    line = f"{run.id} {run.status.value} in {render.duration(run.duration)}"
    if run.metrics:
        line += f": {render.metrics_text(run.metrics, limit=5)}"
    if run.failure_reason:
        line += f": {run.failure_reason}"
    typer.secho(line, fg="green" if run.status.value == "Completed" else "red", err=run.status.value != "Completed")
    if run.status.value != "Completed":
        raise typer.Exit(1)


def _dry_run(plan: api.Plan, *, smoke: bool, as_json: bool) -> None:
    from orchestrator import api

    details = api.describe(plan, client=current_client())
    if not as_json:
        _print_plan(plan, details)
    result = None
    if smoke:
        if not as_json:
            typer.echo("\nSmoke test: one train and one validation batch through the container contract ...")
            if any("://" in path for path in plan.data.values()):
                typer.echo("  (remote channels are not downloaded for it; the job sees only local ones)")
        with tempfile.TemporaryDirectory(prefix="dl-dry-run-") as workdir:
            result = api.smoke_test(plan, Path(workdir), client=current_client())
    if as_json:
        out = _plan_json(plan, details)
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


def _plan_json(plan: api.Plan, details: dict) -> dict:

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
            "notes": plan.package.notes,
        },
        **details,
    }


def _print_plan(plan: api.Plan, details: dict) -> None:

    pkg = plan.package
    typer.secho(f"Dry run: {plan.job.name} on {plan.target}. Nothing will be started or sent.", bold=True)
    typer.echo(f"\nPackage   {pkg.short_hash}  {len(pkg.files)} files, {render.size(pkg.size)} compressed")
    typer.echo(f"          {details.get('package_uri') or pkg.path}")
    for item in pkg.files:
        typer.echo(f"            {item.name}  ({render.size(item.size)})")
    if pkg.excluded:
        typer.echo(f"Excluded  {', '.join(pkg.excluded)}")
    typer.echo("\nHyperparameters")
    width = max((len(k) for k in plan.params), default=0)
    for key, value in plan.params.items():
        typer.echo(f"  {key.ljust(width)}  {value}")
    typer.echo("\nData")
    if plan.data:
        for name, path in plan.data.items():
            typer.echo(f"  {name}  {path}")
    else:
        typer.echo("  (no channels: the job uses its built-in default data)")
    resources, cost = details["resources"], details["cost"]
    if plan.target == "local":
        gpus = resources.get("gpus") or 0
        typer.echo(
            f"\nResources this machine: {resources.get('cpus')} CPUs, {gpus or 'no'} GPU{'s' if gpus != 1 else ''}"
        )
        typer.echo(f"Outputs   {details['outputs']}/{{model,checkpoints,output}}")
        typer.echo("Cost      $0.00 (local)")
        return
    per_node = resources["gpus_per_node"]
    each = f"{per_node} GPU{'s' if per_node != 1 else ''} each" if per_node else "CPU only"
    typer.echo(f"\nResources {resources['nodes']} x {resources['instance_type']} ({each}) in {resources['region']}")
    typer.echo(f"Image     {resources['image']}")
    typer.echo(
        f"Cost      ${cost['price_per_hour']:.3f}/hour; at most {cost['max_hours']:g} h: "
        f"${cost['max_cost_on_demand']:.2f} on demand, about ${cost['max_cost_spot_estimate']:.2f} with spot"
        f"{' (spot requested)' if cost['spot'] else ''}. Prices are estimates (dl gpus)."
    )
    typer.echo("\nCreateTrainingJob request (validated against botocore's model):")
    typer.echo(json.dumps(details["request"], indent=2))
