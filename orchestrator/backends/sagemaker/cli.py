"""The sagemaker backend's own commands, added to `dl` by :func:`register` (SupportsCommands).

`dl infra deploy | status | destroy`: dl's AWS resources as one CloudFormation stack.
`dl gpus`: the SageMaker training instances dl can launch on, with estimated prices.
Nothing here imports boto3 at import time: `dl --help` imports this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import typer

from orchestrator.cli import render
from orchestrator.errors import DlError

if TYPE_CHECKING:
    from orchestrator import config
    from orchestrator.backends.sagemaker.account import StackEvent

infra_app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich")


def register(app: typer.Typer) -> None:
    """Add `dl infra` and `dl gpus` to ``app``."""
    app.add_typer(infra_app, name="infra", help="Create, show or delete dl's AWS resources (one CloudFormation stack).")
    app.command()(gpus)


_REGION = typer.Option(None, "--region", "-r", metavar="REGION", help="AWS region (default from config).")
_PROFILE = typer.Option(None, "--profile", metavar="NAME", help="AWS profile.")
_STACK = typer.Option(None, "--stack-name", metavar="NAME", help="Stack name (default aws.stack_name, else dl).")
_YES = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


def _settings(region: str | None, profile: str | None, stack_name: str | None) -> config.Settings:
    from orchestrator import config

    settings = config.load_settings(cli={"region": region, "profile": profile, "stack_name": stack_name})
    config.require(settings, "region", purpose="dl infra")
    return settings


def _print_event(event: StackEvent) -> None:
    color = "red" if event.status.endswith("FAILED") else "green" if event.status.endswith("COMPLETE") else None
    status = f"{event.status:<20}"
    shown = typer.style(status, fg=color) if color and render.use_color() else status
    line = f"  {event.timestamp:%H:%M:%S}  {shown}  {event.logical_id:<18}  {event.resource_type}"
    typer.echo(line + (f"  {event.reason}" if event.reason else ""))


@infra_app.command()
def deploy(
    region: str = _REGION,
    profile: str = _PROFILE,
    stack_name: str = _STACK,
    yes: bool = _YES,
    versioning: bool = typer.Option(None, "--versioning/--no-versioning", help="S3 versioning (default: off)."),
    package_days: int = typer.Option(
        None, "--package-days", min=0, metavar="DAYS", help="Delete code packages after DAYS (0: keep; default 90)."
    ),
    log_days: int = typer.Option(None, "--log-days", metavar="DAYS", help="Keep training logs DAYS (default 30)."),
    kms_key: str = typer.Option(None, "--kms-key", metavar="ARN", help="Encrypt with this KMS key (default SSE-S3)."),
) -> None:
    """Create or update dl's stack, then write its outputs into dl.toml.

    Shows what will change and asks first (unless --yes). Options not given keep the stack's values.

    Afterwards `dl launch JOB --gpu` needs no other setup: dl.toml has the bucket and roles, target sagemaker.

    \b
    [bold]Examples[/bold]
      dl infra deploy --region us-east-1
      dl infra deploy --yes --versioning --log-days 90
      dl infra deploy --stack-name dl-team-b
    """
    from orchestrator import config
    from orchestrator.backends.sagemaker import infra

    settings = _settings(region, profile, stack_name)
    account = infra.connect(settings.region, settings.profile)
    prefix = settings.prefix if settings.sources["prefix"] != config.DEFAULT else None
    options = infra.Options(versioning=versioning, package_days=package_days, log_days=log_days, kms_key_arn=kms_key)
    plan = infra.plan(account, settings.stack_name, prefix=prefix, options=options)
    if plan is None:
        typer.echo(f"Stack {settings.stack_name} is up to date.")
        stack = infra.status(account, settings.stack_name)
        if stack is None or any(not stack.outputs.get(key) for key in infra.OUTPUTS):
            raise infra.InfraError(f"Stack {settings.stack_name} has none of dl's outputs.", "See `dl infra status`.")
    else:
        verb = "Create" if plan.kind == "CREATE" else "Update"
        typer.echo(f"{verb} stack {plan.stack_name} in {plan.region}:")
        rows = [["  " + c.action, c.logical_id, c.resource_type, _replacement(c.replacement)] for c in plan.changes]
        if rows:
            typer.echo(render.table(["  ACTION", "RESOURCE", "TYPE", ""], rows))
        else:
            typer.echo("  no resource changes (parameters or outputs only)")
        for note in plan.notes:
            typer.echo(f"Note: {note}")
        if not yes and not _ask("Deploy these changes?"):
            infra.discard(account, plan)
            typer.echo("Nothing changed.")
            raise typer.Exit(1)
        stack = infra.apply(account, plan, on_event=_print_event)
        typer.echo(f"Stack {stack.name} is {stack.status}.")
    path = infra.save(stack)
    typer.echo(f"Wrote the stack's outputs to {path}; the default target is now sagemaker:")
    for output, (section, key) in infra.OUTPUTS.items():
        typer.echo(f"  {section}.{key:<20} {stack.outputs[output]}")
    typer.echo("Next: `dl doctor` checks the rest (GPU quota included), then `dl launch mnist --gpu`.")


def _ask(question: str) -> bool:
    """typer.confirm, where end of input (a script without --yes) means no."""
    try:
        return typer.confirm(question, default=False)
    except click.exceptions.Abort:
        typer.echo()
        return False


def _replacement(value: str) -> str:
    return {"True": "(replaced)", "Conditional": "(may be replaced)"}.get(value, "")


@infra_app.command()
def status(
    region: str = _REGION,
    profile: str = _PROFILE,
    stack_name: str = _STACK,
    as_json: bool = typer.Option(False, "--json", help="Print the stack as JSON."),
) -> None:
    """Show dl's stack: its status, outputs and parameters, and whether dl.toml matches them.

    \b
    [bold]Examples[/bold]
      dl infra status
      dl infra status --json | jq -r .outputs.BucketName
    """
    from orchestrator.backends.sagemaker import infra

    settings = _settings(region, profile, stack_name)
    account = infra.connect(settings.region, settings.profile)
    stack = infra.status(account, settings.stack_name)
    if stack is None:
        raise infra.InfraError(
            f"No stack {settings.stack_name!r} in {account.region}.",
            f"Create it: `dl infra deploy --region {account.region}`.",
        )
    drift = infra.settings_drift(stack, settings)
    if as_json:
        data = {
            "name": stack.name,
            "id": stack.stack_id,
            "region": account.region,
            "status": stack.status,
            "reason": stack.reason or None,
            "updated": stack.updated.isoformat() if stack.updated else None,
            "outputs": stack.outputs,
            "parameters": stack.parameters,
            "settings_drift": drift,
        }
        render.print_json(data)
        return
    updated = f"  (updated {stack.updated:%Y-%m-%d %H:%M %Z})" if stack.updated else ""
    typer.echo(f"Stack       {stack.name}  ({account.region})")
    typer.echo(f"Status      {stack.status}{updated}" + (f": {stack.reason}" if stack.reason else ""))
    typer.echo("Outputs")
    for key, value in stack.outputs.items():
        typer.echo(f"  {key:<18} {value}")
    typer.echo("Parameters")
    for key, value in stack.parameters.items():
        typer.echo(f"  {key:<22} {value or '-'}")
    if drift:
        typer.secho(f"Settings    differ: {'; '.join(drift)}. `dl infra deploy` rewrites dl.toml.", fg="yellow")
    else:
        typer.echo("Settings    match the stack's outputs")


@infra_app.command()
def destroy(
    region: str = _REGION,
    profile: str = _PROFILE,
    stack_name: str = _STACK,
    yes: bool = _YES,
) -> None:
    """Delete dl's stack and everything in its bucket (after confirmation).

    Every SageMaker run's packages, checkpoints and models go with the bucket (logs too, if the stack made the group).

    What `dl infra deploy` wrote into dl.toml is removed: the default target is local again.

    \b
    [bold]Examples[/bold]
      dl infra destroy
      dl infra destroy --region eu-west-1 --yes
    """
    from orchestrator import config
    from orchestrator.backends.sagemaker import infra

    settings = _settings(region, profile, stack_name)
    account = infra.connect(settings.region, settings.profile)
    plan = infra.teardown(account, settings.stack_name)
    if plan is None:
        typer.echo(f"No stack {settings.stack_name!r} in {account.region}: nothing to delete.")
        return
    typer.echo(f"This deletes stack {plan.stack.name} in {account.region} ({plan.stack.status}) and with it:")
    if plan.bucket:
        typer.echo(f"  s3://{plan.bucket}  {plan.objects} objects ({render.size(plan.bytes)}): every run's packages,")
        typer.echo("    checkpoints and models")
    if plan.log_group:
        typer.echo(f"  {plan.stack.outputs.get('LogGroup', 'the training log group')}  every training job's logs")
    roles = [plan.stack.outputs[key].rsplit("/", 1)[-1] for key in ("ExecutionRoleArn", "SchedulerRoleArn")
             if plan.stack.outputs.get(key)]  # fmt: skip
    if roles:
        typer.echo(f"  IAM roles {', '.join(roles)}")
    if not yes and not _ask("Delete all of this? It cannot be undone."):
        typer.echo("Nothing deleted.")
        raise typer.Exit(1)
    infra.destroy(
        account,
        plan,
        on_event=_print_event,
        on_emptied=lambda n: typer.echo(f"  deleted {n} objects from s3://{plan.bucket}"),
    )
    typer.echo(f"Stack {plan.stack.name} is deleted.")
    try:
        removed = infra.forget(plan.stack, config.load_settings(cli={"region": region, "profile": profile}))
    except DlError as exc:
        typer.secho(f"Could not update dl.toml: {exc}", fg="yellow", err=True)
        return
    if removed:
        typer.echo(f"Removed {', '.join(removed)} from {settings.config_path}.")


# -- dl gpus ---------------------------------------------------------------------------------


def gpus(
    region: str = typer.Option(
        None, "--region", "-r", help="Price in this AWS region (default: the configured region, else us-east-1)."
    ),
    gpu: str = typer.Option(
        None, "--gpu", "-g", metavar="MODEL", help="Only this GPU, e.g. A100 or A100:8 (any: all GPU types)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List SageMaker training instance types: GPUs, memory and estimated price per hour.

    `dl launch JOB --gpu MODEL` picks the cheapest type with one such GPU; `--gpu MODEL:N` with N of them.

    \b
    [bold]Examples[/bold]
      dl gpus
      dl gpus --gpu A100
      dl gpus --region eu-west-1 --json | jq '.instances[0]'
    """
    from orchestrator.backends.sagemaker import catalog

    cat = catalog.load()
    region = cat.check_region(region or catalog.default_region())
    found = cat.listing(gpu=gpu, region=region)
    if as_json:
        render.print_json(
            {
                "region": region,
                "as_of": cat.as_of,
                "currency": cat.currency,
                "note": cat.note,
                "instances": [inst.to_json(region) for inst in found],
            }
        )
        return
    if not found:
        typer.echo(f"No instance type has GPUs matching '{gpu}'. Run `dl gpus` to see them all.")
        return
    typer.echo(
        f"Prices: estimated SageMaker training on-demand prices for {region} as of {cat.as_of}; "
        "check the AWS pricing page before relying on them."
    )
    headers = ["TYPE", "GPU", "GPUS", "GPU MEM", "VCPUS", "MEMORY", f"$/HOUR ({region})", "SPOT"]
    rows = [
        [
            inst.type,
            inst.gpu or "-",
            str(inst.gpus) if inst.is_gpu else "-",
            f"{inst.gpu_memory_gib:g} GiB" if inst.is_gpu else "-",
            str(inst.vcpus),
            f"{inst.memory_gib:g} GiB",
            f"{inst.price(region):,.2f}",
            "yes" if inst.spot else "no",
        ]
        for inst in found
    ]
    typer.echo(render.table(headers, rows))
