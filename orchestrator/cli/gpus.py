"""`dl gpus`: the SageMaker training instances dl can launch on, with estimated prices."""

from __future__ import annotations

import typer

from orchestrator import catalog
from orchestrator.cli import app, render


@app.command()
def gpus(
    region: str = typer.Option(
        None, "--region", "-r", help="Price in this AWS region (default: $DL_REGION, else $AWS_REGION, else us-east-1)."
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
