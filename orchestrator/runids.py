"""Run ids: generated ones (``mnist-20261125-1930-a1b2``) and the rules a given one must follow.

Every id is a valid SageMaker training job name (ASCII letters, digits and hyphens, at most 63,
starting and ending with a letter or digit), whatever the job is called: the job's name is
transliterated to ASCII (``Ünet`` → ``unet``) and, when nothing of it survives (``日本``), replaced
by ``job-`` and a short hash of it, so two such jobs still get different ids.

A generated id ends in 16 random bits: 100 runs of one job within one minute share an id with a
chance of 6.6%, so :func:`insert_new` draws again until the store takes one (the store's primary
key decides, so two processes inserting at once cannot both get the same id).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.errors import DlError, RunExists, UsageError

if TYPE_CHECKING:
    from orchestrator.store import Run, Store

MAX_LENGTH = 63
_VALID = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
DRAWS = 50  # attempts before giving up: 50 collisions in a row means the store is full of this minute's ids


def slug(name: str) -> str:
    """``"Ünet v2"`` → ``"unet-v2"``; ``"日本"`` → ``"job-<6 hex digits>"``: ASCII letters, digits, single hyphens."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-")
    return text or "job-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:6]


def new_run_id(job_name: str, now: float | None = None) -> str:
    """``mnist-20261125-1930-a1b2``: readable, sortable, and a valid SageMaker job name (≤63)."""
    stamp = time.strftime("%Y%m%d-%H%M", time.gmtime(now or time.time()))
    suffix = secrets.token_hex(2)
    head = slug(job_name)[: MAX_LENGTH - len(stamp) - len(suffix) - 2].rstrip("-")
    return f"{head}-{stamp}-{suffix}"


def valid_run_name(name: str) -> str:
    """``name`` itself when it is a valid run id (a SageMaker job name); else a UsageError."""
    if not _VALID.fullmatch(name):
        raise UsageError(
            f"Run name {name!r} is not a valid SageMaker job name.",
            "Use up to 63 letters, digits and hyphens, starting with a letter or digit.",
        )
    return name


def insert_new(store: Store, run: Run, job_name: str, claim: Callable[[str], dict] | None = None) -> Run:
    """Insert ``run`` under a freshly drawn id, drawing again while the id is taken; return the run
    as inserted.

    An id is taken when the store has it, when ``claim`` (the backend's reservation, e.g. the
    local run folder; it returns the backend state the row starts with) raises a DlError for it,
    or when the insert itself is refused by the runs table's primary key: so an id that another
    process takes between the draw and the insert only costs another draw. (A claim whose insert
    then lost such a race stays behind, empty.)"""
    from dataclasses import replace

    refusal: DlError | None = None
    for _ in range(DRAWS):
        run_id = new_run_id(job_name, now=run.created_at)
        if store.exists(run_id):
            continue
        try:
            state = claim(run_id) if claim is not None else {}
        except DlError as exc:
            refusal = exc
            continue
        candidate = replace(run, id=run_id, backend_state={**run.backend_state, **state})
        try:
            store.insert(candidate)
        except RunExists:
            continue
        return candidate
    if refusal is not None:
        raise refusal
    raise UsageError(
        f"Every id drawn for a new run of {job_name} was taken ({DRAWS} draws).",
        "Give the run a name with --name.",
    )
