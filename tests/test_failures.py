"""Failure kinds: a run that did not complete says why as a kind, with its fix, in `dl show`,
`--json` and `dl runs --failure-kind`: from real local failures (a bug, an allocation too big
for any machine) and from SageMaker's FailureReason and SecondaryStatus."""

from __future__ import annotations

import json
import shutil

import pytest

from orchestrator.failures import FailureKind, from_reason
from tests.conftest import MNIST, TINY, invoke, runs_json
from tests.sagemaker_double import MotoProxy, aws_json_error, patched

CREATE = "SageMaker.CreateTrainingJob"


def one_run() -> dict:
    [run] = runs_json()
    return run


def shown_kind(run_id: str) -> str:
    """The ``Kind`` line of `dl show RUN`, after its label."""
    [line] = [line for line in invoke("show", run_id).stdout.splitlines() if line.startswith("Kind ")]
    return line.removeprefix("Kind").strip()


@pytest.mark.train
def test_a_local_bug_is_user_code_shown_with_its_fix_and_filterable(dl_home, broken_job):
    result = invoke("launch", str(broken_job), "--local", "--follow", *TINY)
    assert result.exit_code == 1
    run = one_run()
    assert run["status"] == "Failed" and run["failure_kind"] == "user_code"
    assert run["failure_reason"].startswith("ZeroDivisionError: division by zero (model.py:")
    assert shown_kind(run["id"]) == f"user_code: {FailureKind.USER_CODE.fix(run['id'], 'broken')}"
    assert f"read `dl logs {run['id']}`" in shown_kind(run["id"])
    picked = json.loads(invoke("runs", "--failure-kind", "user_code", "--json").stdout)
    assert [r["id"] for r in picked] == [run["id"]]
    assert json.loads(invoke("runs", "--failure-kind", "capacity", "--json").stdout) == []
    assert json.loads(invoke("runs", "--failure-kind", "user-code", "--status", "failed", "--json").stdout) == picked
    bad = invoke("runs", "--failure-kind", "bugs")
    assert bad.exit_code == 2 and bad.stderr.strip().splitlines() == [
        "Error: Unknown failure kind 'bugs'. Use one of: quota, capacity, permission, spot, out_of_memory, user_code,"
        " timeout, stopped, internal."
    ]


@pytest.mark.train
def test_a_local_allocation_no_machine_can_make_is_out_of_memory(dl_home, tmp_path):
    # A real allocation failure: 2**60 bytes is beyond any address space, so torch's CPU allocator
    # fails at once, as it does when a batch does not fit (without taking this machine's memory).
    job = tmp_path / "jobs" / "hungry"
    shutil.copytree(MNIST, job, ignore=shutil.ignore_patterns("__pycache__"))
    source = (job / "model.py").read_text()
    marker = "def training_step(self, batch, batch_idx):"
    (job / "model.py").write_text(source.replace(marker, marker + "\n        torch.empty(2**60, dtype=torch.uint8)", 1))
    assert "import torch\n" in source, "the mnist model changed shape; update this test"
    result = invoke("launch", str(job), "--local", "--follow", *TINY)
    assert result.exit_code == 1
    run = one_run()
    assert run["failure_kind"] == "out_of_memory", run["failure_reason"]
    assert "can't allocate memory" in run["failure_reason"]
    assert shown_kind(run["id"]).startswith("out_of_memory: Lower the batch size")


@pytest.mark.train
def test_a_stopped_local_run_is_stopped(dl_home):
    from orchestrator import api

    launched = json.loads(invoke("launch", "mnist", "--local", "--json").stdout)
    stopped = api.stop(launched["id"], grace=30)
    assert (stopped.status.value, stopped.failure_kind) == ("Stopped", FailureKind.STOPPED)
    assert one_run()["failure_kind"] == "stopped"


# -- SageMaker -------------------------------------------------------------------------------

# FailureReason strings as SageMaker writes them, and the kind each is.
REASONS = [
    ('AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage "ZeroDivisionError: division by zero"',
     "user_code"),
    ('AlgorithmError: ExecuteUserScriptError:\nExitCode 137\nErrorMessage ""\nExtraInfo "OutOfMemory: Process killed'
     ' by SIGKILL (signal 9)"', "out_of_memory"),
    ("AlgorithmError: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "out_of_memory"),
    ("CapacityError: Unable to provision requested ML compute capacity. Please retry using a different ML instance"
     " type.", "capacity"),
    ("ResourceLimitExceeded: The account-level service limit 'ml.p4d.24xlarge for spot training job usage' is 0"
     " Instances", "quota"),
    ("ClientError: Failed to download data. AccessDenied: Access Denied", "permission"),
    ("InternalServerError: We encountered an internal error.  Please try again.", "internal"),
]  # fmt: skip


@pytest.mark.parametrize(("reason", "kind"), REASONS)
def test_sagemaker_failure_reasons_name_their_kind(reason, kind):
    assert from_reason(reason) is FailureKind(kind)


@pytest.fixture
def proxy(aws, moto_endpoint, monkeypatch):
    with MotoProxy(moto_endpoint) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL", running.url)
        yield running


def ended_as(status: str, secondary: str, reason: str | None = None):
    """moto's own DescribeTrainingJob answer with the job ended as ``status``: moto marks every job
    Completed at once and cannot fail or stop one, so the test says how it ended."""

    def change(job: dict) -> None:
        job["TrainingJobStatus"], job["SecondaryStatus"] = status, secondary
        if reason:
            job["FailureReason"] = reason

    return patched(change)


@pytest.mark.parametrize(
    ("status", "secondary", "reason", "kind"),
    [
        ("Failed", "Failed", REASONS[1][0], "out_of_memory"),
        ("Failed", "Failed", REASONS[3][0], "capacity"),
        ("Stopped", "MaxRuntimeExceeded", None, "timeout"),
        ("Stopped", "MaxWaitTimeExceeded", None, "spot"),
        ("Stopped", "Stopped", None, "stopped"),
    ],
)
def test_a_sagemaker_job_that_ended_badly_records_its_kind(proxy, status, secondary, reason, kind):
    proxy.answer("SageMaker.DescribeTrainingJob", ended_as(status, secondary, reason))
    launched = invoke("launch", "mnist", "--gpu", "T4", "--json")
    assert launched.exit_code == 0, launched.output
    run = one_run()  # refreshed: one DescribeTrainingJob, answered as above
    assert (run["status"], run["failure_kind"], run["failure_reason"]) == (status, kind, reason)
    assert shown_kind(run["id"]) == f"{kind}: {FailureKind(kind).fix(run['id'], 'mnist')}"
    assert [r["id"] for r in json.loads(invoke("runs", "--failure-kind", kind, "--json").stdout)] == [run["id"]]


def test_a_run_that_could_not_start_records_the_errors_kind(proxy):
    proxy.answer(CREATE, aws_json_error("ResourceLimitExceeded", "The account-level service limit is 0 Instances."))
    assert invoke("launch", "mnist", "--gpu", "T4").exit_code == 1
    run = one_run()
    assert run["failure_kind"] == "quota" and run["failure_reason"].startswith("Could not start: Your SageMaker quota")
    proxy.answer(
        CREATE, aws_json_error("AccessDeniedException", "not authorized to perform: sagemaker:CreateTrainingJob")
    )
    assert invoke("launch", "mnist", "--gpu", "T4").exit_code == 1
    assert sorted(r["failure_kind"] for r in runs_json()) == ["permission", "quota"]
