"""The minimal hand-written boto3 submission that `dl launch mnist --target sagemaker --gpu T4` is
compared with: upload the code, create the training job, print its ARN. Nothing else.

    .venv/bin/python bench/boto3_launch.py PLAN.json PACKAGE.tar.gz

PLAN.json is the output of `dl launch mnist --target sagemaker --gpu T4 --dry-run --json
--no-smoke-test`; its `request` is used as it stands (same image URI, hyperparameters, resource,
stopping and checkpoint config, metric regexes, environment and tags) with a new job name in
place of the dry run's. PACKAGE.tar.gz is the package dl built (sourcedir.tar.gz).

The script uploads the package on every launch, under the job's own key
(s3://BUCKET/boto3/<job name>/sourcedir.tar.gz, which `sagemaker_submit_directory` then names):
a hand-written script has no content addressing to tell it that the same code is already there,
and reusing one fixed key would change the code under jobs that have not started yet.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path

import boto3


def main() -> None:
    plan, package = json.loads(Path(sys.argv[1]).read_text()), sys.argv[2]
    template = plan["request"]
    name = f"mnist-boto3-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
    request = json.loads(json.dumps(template).replace(template["TrainingJobName"], name))
    bucket = request["OutputDataConfig"]["S3OutputPath"].removeprefix("s3://").split("/", 1)[0]
    key = f"boto3/{name}/sourcedir.tar.gz"
    request["HyperParameters"]["sagemaker_submit_directory"] = json.dumps(f"s3://{bucket}/{key}")

    session = boto3.session.Session()
    session.client("s3").upload_file(package, bucket, key)
    print(session.client("sagemaker").create_training_job(**request)["TrainingJobArn"])


if __name__ == "__main__":
    main()
