"""One exception root for everything a user can act on.

Each error carries a headline (what is wrong) and a hint (what to do). The CLI
prints them on one line and exits non-zero; tracebacks only with ``--debug``.
"""

from __future__ import annotations


class DlError(Exception):
    """An error with a cause the user can fix. ``exit_code`` is what the CLI returns."""

    exit_code = 1
    # What a run that this error kept from starting failed of (a failures.FailureKind value); None: unknown.
    failure_kind: str | None = None

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip() if self.hint else self.message


class UsageError(DlError):
    """Bad input on the command line: unknown job, bad parameter, missing path."""

    exit_code = 2


class JobError(UsageError):
    """A trainjob folder that cannot be found or whose job.toml is invalid."""


class ParamError(UsageError):
    """A --set value that is unknown, ill-typed or out of range."""


class RunNotFound(UsageError):
    """No run with that id in the store."""


class RunExists(UsageError):
    """A run with that id is already in the store."""


class PackageError(DlError):
    """The job cannot be packaged (too large, forbidden requirement, ...)."""


class StoreError(DlError):
    """DL_HOME or the run database cannot be used."""


class BackendError(DlError):
    """A backend could not do what was asked (start, stop, fetch)."""


class ArtifactError(DlError):
    """A checkpoint or model file is missing or corrupt."""
