"""Importing training jobs that dl started, found by dl's tags (``dl:run``, ``dl:job``, ...).

One importer for the runs cloud schedules start (schedules.discover), for `dl runs --sync --all`
and for `dl store rebuild` (SageMakerBackend.import_runs): a job becomes a run with what its
description and tags say (job, params, package hash, git commit, channels, where its outputs
are, the schedule that started it), then its status is read as for any run. What a job does
not carry (the git dirty flag, the sweep) stays unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from orchestrator.backends.runtime_io import decode_hyperparameters
from orchestrator.backends.sagemaker import request as req
from orchestrator.store import Run, RunStatus, Store


def is_dl_job(tags: dict[str, str]) -> bool:
    """A job dl created: `dl launch` tags it ``dl:run`` and ``dl:job``."""
    return "dl:run" in tags or "dl:job" in tags


def import_tagged(
    store: Store,
    places: Iterable[tuple[str | None, str | None]],
    since: datetime | None,
    *,
    wanted: Callable[[dict[str, str]], bool] = is_dl_job,
) -> list[Run]:
    """Insert the training jobs created after ``since`` (None: all) in each (region, profile) of
    ``places`` whose tags are ``wanted`` and that the store does not know yet; return them.
    A job already known is not even asked for its tags."""
    from orchestrator.backends.sagemaker.aws import Aws

    imported = []
    for region, profile in sorted(set(places), key=str):
        aws = Aws(region, profile)
        for summary in aws.list_training_jobs(since):
            name = summary["TrainingJobName"]
            if store.exists(name):
                continue
            tags = job_tags(aws, summary["TrainingJobArn"])
            if wanted(tags):
                imported.append(import_job(store, aws, name, tags, profile))
    return imported


def job_tags(aws, arn: str) -> dict[str, str]:
    from orchestrator.backends.sagemaker.aws import translate

    with translate(f"reading the tags of {arn}"):
        pages = aws.client("sagemaker").get_paginator("list_tags").paginate(ResourceArn=arn)
        return {t["Key"]: t["Value"] for page in pages for t in page.get("Tags", [])}


def import_job(store: Store, aws, name: str, tags: dict[str, str], profile: str | None) -> Run:
    """Insert training job ``name`` as a run and bring its status up to date; return it."""
    from orchestrator.backends.sagemaker import SageMakerBackend, estimate

    job = aws.describe_training_job(name)
    hyper = decode_hyperparameters(job.get("HyperParameters") or {})
    params = {k: v for k, v in hyper.items() if not k.startswith("sagemaker_")}
    output = job["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    resources = job.get("ResourceConfig", {})
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job.get("InputDataConfig") or []}
    price = None
    try:
        placement = req.Placement(region=aws.region, bucket="", prefix="", role_arn="", image="",
                                  instance_type=resources.get("InstanceType", ""), gpus_per_node=0,
                                  nodes=int(resources.get("InstanceCount") or 1))  # fmt: skip
        price = estimate(placement)["price_per_hour"]
    except Exception:  # an instance type dl's catalog does not know: no cost estimate
        price = None
    run = Run(
        id=name,
        job=tags.get("dl:job", "?"),
        target="sagemaker",
        status=RunStatus.PENDING,
        params=params,
        package_hash=tags.get("dl:package"),
        git_commit=tags.get("dl:git-commit"),
        created_at=job["CreationTime"].timestamp(),
        data=channels,
        log_uri=f"cloudwatch:{req.LOG_GROUP}/{name}",
        checkpoint_uri=(job.get("CheckpointConfig") or {}).get("S3Uri"),
        model_uri=f"{output}/{name}/output/model.tar.gz",
        output_uri=output,
        backend_state={
            "region": aws.region,
            "profile": profile,
            "instance_type": resources.get("InstanceType"),
            "nodes": resources.get("InstanceCount"),
            "spot": bool(job.get("EnableManagedSpotTraining")),
            "price_per_hour": price,
            "arn": job.get("TrainingJobArn"),
            "package_uri": hyper.get("sagemaker_submit_directory"),
            "imported": True,
        },  # fmt: skip
        schedule=tags.get("dl:schedule"),
    )
    store.insert(run)
    SageMakerBackend()._apply(store, run, job)
    return store.get(name)
