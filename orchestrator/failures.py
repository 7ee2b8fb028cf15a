"""Why a run did not complete, as a kind users and scripts can act on.

Every Failed or Stopped run records a :class:`FailureKind` (``run.failure_kind``, ``--json``'s
``failure_kind``, ``dl runs --failure-kind``) beside its one-line ``failure_reason``. It is filled
where the outcome is known: the error that kept a run from starting (the backends' own error
classes carry a kind), the local runtime's failure line and exit status (:func:`of_program`),
SageMaker's FailureReason and SecondaryStatus (:func:`from_reason`), and otherwise by the store
from the status (:func:`default_for`). Stdlib only.
"""

from __future__ import annotations

import re
import signal
from enum import StrEnum

from orchestrator.errors import UsageError


class FailureKind(StrEnum):
    QUOTA = "quota"
    """The account's quota for the instance type is too low (SageMaker's ResourceLimitExceeded)."""
    CAPACITY = "capacity"
    """The cloud had no machines of that type free right now (CapacityError, InsufficientCapacity)."""
    PERMISSION = "permission"
    """Credentials or a role lacked a permission: AccessDenied, expired credentials, a role SageMaker cannot assume."""
    SPOT = "spot"
    """Spot capacity was taken back, or did not come within the wait (SageMaker's MaxWaitTimeExceeded)."""
    OUT_OF_MEMORY = "out_of_memory"
    """The program ran out of memory: CUDA or CPU allocation failed, MemoryError, or SIGKILL (the OOM killer)."""
    USER_CODE = "user_code"
    """The training program raised an error or exited non-zero: a bug, or bad data or parameters."""
    TIMEOUT = "timeout"
    """The run reached its time limit (--max-hours: SageMaker's MaxRuntimeExceeded)."""
    STOPPED = "stopped"
    """Someone stopped it (dl stop, StopTrainingJob)."""
    INTERNAL = "internal"
    """Anything else: the backend or dl (a process gone without an outcome, an AWS internal error)."""

    def fix(self, run_id: str = "RUN", job: str = "JOB") -> str:
        """What to do about it, in one sentence naming the run and its job."""
        return _FIXES[self].format(run=run_id, job=job)

    @classmethod
    def parse(cls, text: str) -> FailureKind:
        for kind in cls:
            if kind.value == text.lower().replace("-", "_"):
                return kind
        raise UsageError(f"Unknown failure kind {text!r}.", f"Use one of: {', '.join(k.value for k in cls)}.")


_FIXES = {
    FailureKind.QUOTA: "Request an increase in Service Quotas > Amazon SageMaker ('<type> for training job usage'),"
    " or pick another --gpu.",
    FailureKind.CAPACITY: "Try again later, or another --gpu, --spot, or another --region.",
    FailureKind.PERMISSION: "Check the credentials (`aws sso login`) and the roles' policies; `dl doctor` checks them.",
    FailureKind.SPOT: "Continue from its last checkpoint: dl launch {job} --from {run}:last (--max-hours waits"
    " longer for spot; --on-demand does not wait).",
    FailureKind.OUT_OF_MEMORY: "Lower the batch size (--set batch_size=...), or pick a machine with more memory.",
    FailureKind.USER_CODE: "The job's code failed: read `dl logs {run}`, fix it, and check with `dl launch {job}"
    " --dry-run`.",
    FailureKind.TIMEOUT: "Raise --max-hours, or continue from its last checkpoint: dl launch {job} --from {run}:last.",
    FailureKind.STOPPED: "Continue it from its last checkpoint: dl resume {run} (local), or dl launch {job} --from"
    " {run}:last.",
    FailureKind.INTERNAL: "Try again; if it happens again, rerun with --debug and report it.",
}

# Reason text → kind, first match wins: out of memory before user code (the toolkit's
# ExecuteUserScriptError carries OutOfMemory), quota before spot (a spot quota is a quota).
_OOM = r"out of memory|OutOfMemory|MemoryError|can't allocate memory|Cannot allocate memory"
_PATTERNS = [
    (FailureKind.OUT_OF_MEMORY, _OOM),
    (FailureKind.QUOTA, r"ResourceLimitExceeded|quota"),
    (FailureKind.CAPACITY, r"CapacityError|InsufficientInstanceCapacity|InsufficientCapacity|no capacity"),
    (FailureKind.SPOT, r"MaxWaitTimeExceeded|spot\b.*interrupt|interrupt.*\bspot"),
    (FailureKind.TIMEOUT, r"MaxRuntimeExceeded"),
    (FailureKind.PERMISSION, r"AccessDenied|Access denied|not authorized|Forbidden|credentials|cannot assume"),
    (FailureKind.INTERNAL, r"InternalServerError|internal error|without recording an outcome"),
    (FailureKind.USER_CODE, r"AlgorithmError|ExecuteUserScriptError"),
]  # fmt: skip


def from_reason(reason: str | None, default: FailureKind = FailureKind.INTERNAL) -> FailureKind:
    """The kind a one-line failure reason names (a SageMaker FailureReason, an error), else ``default``."""
    for kind, pattern in _PATTERNS:
        if reason and re.search(pattern, reason, re.IGNORECASE):
            return kind
    return default


def of_program(returncode: int, reason: str) -> FailureKind:
    """The kind of a training program's failure (the local runtime): killed by SIGKILL (the kernel's
    OOM killer; ``dl stop`` kills only runs it then records as Stopped) or an allocation error is
    out of memory; any other exit is the job's code."""
    oom = returncode in (-signal.SIGKILL, 128 + signal.SIGKILL) or re.search(_OOM, reason or "", re.IGNORECASE)
    return FailureKind.OUT_OF_MEMORY if oom else FailureKind.USER_CODE


def of_error(exc: BaseException) -> FailureKind:
    """The kind of an error that kept a run from starting: the error's own (the backends' error
    classes declare one), else what its text names, else internal."""
    return getattr(exc, "failure_kind", None) or from_reason(str(exc))


def default_for(status: str, reason: str | None) -> FailureKind | None:
    """What the store records when the caller names no kind: stopped for Stopped, the reason's
    kind for Failed, None for a run that completed."""
    if status == "Stopped":
        return FailureKind.STOPPED
    if status == "Failed":
        return from_reason(reason)
    return None
