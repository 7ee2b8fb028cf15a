"""The same submission as `dl launch mnist --target sagemaker --gpu T4`, written with the SageMaker
Python SDK v3's ModelTrainer (PyPI `sagemaker` 3.x, run from bench/.venv-sdk).

    bench/.venv-sdk/bin/python bench/sdk_launch.py PLAN.json SOURCE_DIR

PLAN.json is the output of `dl launch mnist --target sagemaker --gpu T4 --dry-run --json
--no-smoke-test`: its `request` gives the image, role, instance, volume, time limit, metric regexes,
retry count and tags; its `params` the hyperparameters. SOURCE_DIR is the extracted dl package
(the job's files plus dl_entry.py). ModelTrainer does what it always does with a local source_dir:
uploads it (and its own container drivers) under s3://BUCKET/sdk/<job name>/input/, then
CreateTrainingJob and DescribeTrainingJob; `wait=False` returns once the job exists.

bench/launch_speed.py sets SAGEMAKER_VALIDATE_ROLE=false (the role check calls
iam:SimulatePrincipalPolicy, which moto does not implement) and points
SAGEMAKER_USER_CONFIG_OVERRIDE at a config that opts out of telemetry. Prints the job name.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import boto3
from sagemaker.core.helper.session_helper import Session
from sagemaker.train import ModelTrainer
from sagemaker.train.configs import (
    CheckpointConfig,
    Compute,
    MetricDefinition,
    OutputDataConfig,
    RetryStrategy,
    SourceCode,
    StoppingCondition,
    Tag,
)


def main() -> None:
    plan, source_dir = json.loads(Path(sys.argv[1]).read_text()), sys.argv[2]
    request = plan["request"]
    bucket = request["OutputDataConfig"]["S3OutputPath"].removeprefix("s3://").split("/", 1)[0]
    # ModelTrainer names jobs BASE-YYYYmmddHHMMSS; a random part keeps two launches in one second apart.
    base = f"mnist-sdk-{secrets.token_hex(2)}"
    prefix = f"s3://{bucket}/sdk/{base}"
    algorithm, resources = request["AlgorithmSpecification"], request["ResourceConfig"]
    entry_script = json.loads(request["HyperParameters"]["sagemaker_program"])  # dl_entry.py
    session = Session(boto_session=boto3.Session(), default_bucket=bucket, default_bucket_prefix="sdk")
    trainer = ModelTrainer(
        sagemaker_session=session,
        role=request["RoleArn"],
        training_image=algorithm["TrainingImage"],
        base_job_name=base,
        source_code=SourceCode(source_dir=source_dir, entry_script=entry_script),
        compute=Compute(
            instance_type=resources["InstanceType"],
            instance_count=resources["InstanceCount"],
            volume_size_in_gb=resources["VolumeSizeInGB"],
            enable_managed_spot_training=request["EnableManagedSpotTraining"],
        ),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=request["StoppingCondition"]["MaxRuntimeInSeconds"]
        ),
        checkpoint_config=CheckpointConfig(
            s3_uri=f"{prefix}/checkpoints", local_path=request["CheckpointConfig"]["LocalPath"]
        ),
        output_data_config=OutputDataConfig(s3_output_path=f"{prefix}/output"),
        hyperparameters=plan["params"],
        environment={k: v for k, v in request["Environment"].items() if k != "DL_RUN_ID"},
        tags=[Tag(key=t["Key"], value=base if t["Key"] == "dl:run" else t["Value"]) for t in request["Tags"]],
    )
    trainer = trainer.with_metric_definitions(
        [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in algorithm["MetricDefinitions"]]
    ).with_retry_strategy(RetryStrategy(maximum_retry_attempts=request["RetryStrategy"]["MaximumRetryAttempts"]))
    trainer.train(wait=False, logs=False)
    print(trainer._latest_training_job.training_job_name)


if __name__ == "__main__":
    main()
