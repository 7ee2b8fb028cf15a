"""The CreateTrainingJob request for a run: built as plain data, validated against botocore's model.

Nothing here talks to AWS. ``build_request`` is pure, so the dry run can print exactly what a
launch would send; ``validate`` checks it with botocore's own service model (the same check
boto3 makes before sending).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.backends.runtime_io import TORCH_DISTRIBUTED, hyperparameters_json
from orchestrator.packaging import ENTRY_POINT

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


@dataclass(frozen=True)
class Placement:
    """Where and on what a run goes: the resolved machine and cloud settings."""

    region: str
    bucket: str
    prefix: str
    role_arn: str
    image: str
    instance_type: str
    gpus_per_node: int
    nodes: int = 1
    volume_gb: int = 50
    max_hours: float = 24.0
    spot: bool = False
    retries: int = 1
    tags: dict[str, str] = field(default_factory=dict)

    def s3(self, *parts: str) -> str:
        key = "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))
        return f"s3://{self.bucket}/{key}"


def package_uri(placement: Placement, sha256: str) -> str:
    """Content-addressed: the same code is uploaded once, whatever run uses it."""
    return placement.s3("packages", sha256, "sourcedir.tar.gz")


def run_prefix(placement: Placement, run_id: str) -> str:
    return placement.s3("runs", run_id)


def distributed(placement: Placement) -> bool:
    """torchrun, as SageMaker's PyTorch container runs it, whenever there is more than one process."""
    return placement.nodes > 1 or placement.gpus_per_node > 1


def metric_definitions(monitor: str | None) -> list[dict]:
    """Regexes over the runtime's epoch lines (``epoch 3/10  train_loss=0.12  val_acc=0.97``)."""
    names = ["train_loss", "val_loss"] + ([monitor] if monitor and monitor not in ("train_loss", "val_loss") else [])
    return [{"Name": name, "Regex": rf"\b{name}={_NUMBER}"} for name in names]


def build_request(
    *,
    run_id: str,
    job_name: str,
    monitor: str | None,
    params: dict[str, object],
    data: dict[str, str],
    package_sha256: str,
    git_commit: str | None,
    placement: Placement,
    schedule: str | None = None,
    program: str = ENTRY_POINT,
) -> dict:
    """The CreateTrainingJob request for one run (boto3 keyword arguments). ``program``: the
    job's entry point in the package (a script job's is the wrapper, dl_script.py)."""
    hyperparameters = {
        **params,
        "sagemaker_program": program,
        "sagemaker_submit_directory": package_uri(placement, package_sha256),
        "sagemaker_region": placement.region,
    }
    if distributed(placement):
        hyperparameters[TORCH_DISTRIBUTED] = True
    max_runtime = max(60, int(round(placement.max_hours * 3600)))
    stopping = {"MaxRuntimeInSeconds": max_runtime}
    if placement.spot:
        # Waiting for spot capacity counts too; allow as long again as the run itself.
        stopping["MaxWaitTimeInSeconds"] = 2 * max_runtime
    tags = {
        "dl:job": job_name,
        "dl:run": run_id,
        "dl:package": package_sha256,
        **({"dl:git-commit": git_commit} if git_commit else {}),
        **({"dl:schedule": schedule} if schedule else {}),
        **placement.tags,
    }
    request = {
        "TrainingJobName": run_id,
        "AlgorithmSpecification": {
            "TrainingImage": placement.image,
            "TrainingInputMode": "File",
            "MetricDefinitions": metric_definitions(monitor),
        },
        "RoleArn": placement.role_arn,
        "HyperParameters": hyperparameters_json(hyperparameters),
        "OutputDataConfig": {"S3OutputPath": run_prefix(placement, run_id) + "/output"},
        "ResourceConfig": {
            "InstanceType": placement.instance_type,
            "InstanceCount": placement.nodes,
            "VolumeSizeInGB": placement.volume_gb,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": placement.spot,
        "CheckpointConfig": {
            "S3Uri": run_prefix(placement, run_id) + "/checkpoints",
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        },
        "Environment": {"DL_RUN_ID": run_id, "PYTHONUNBUFFERED": "1"},
        "RetryStrategy": {"MaximumRetryAttempts": placement.retries},
        "Tags": [{"Key": k, "Value": str(v)} for k, v in tags.items()],
    }
    if data:
        request["InputDataConfig"] = [
            {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }
            for name, uri in sorted(data.items())
        ]
    return request


def model_uri(request: dict) -> str:
    """Where SageMaker leaves ``model/`` as a tarball when the job ends."""
    output = request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    return f"{output}/{request['TrainingJobName']}/output/model.tar.gz"


def validate(request: dict) -> None:
    """Check ``request`` against botocore's CreateTrainingJob input shape; UsageError listing problems."""
    from botocore.session import get_session
    from botocore.validate import ParamValidator

    from orchestrator.errors import UsageError

    model = get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateTrainingJob").input_shape
    report = ParamValidator().validate(request, shape)
    if report.has_errors():
        problems = "; ".join(line.strip() for line in report.generate_report().splitlines()[1:] if line.strip())
        raise UsageError(f"The CreateTrainingJob request is invalid: {problems}", "This is a dl bug; please report it.")
