"""Local schedules: dl's own tick scheduler fires them (`dl schedule run`, scheduling.tick).

Everything a local schedule is lives in the store (the schedule, its firings, its runs), so
creating, pausing, repackaging and deleting one changes nothing outside it. A schedule's
promoted checkpoint is kept at ``DL_HOME/schedules/<name>/best/best.ckpt``; a run started
with ``--from SCHEDULE:best`` reads that folder as its ``init`` channel.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import UsageError
from orchestrator.fsutil import replacing

if TYPE_CHECKING:
    from orchestrator.api import Plan
    from orchestrator.options import LaunchOptions
    from orchestrator.store import Run, Schedule, Store


def pointer_folder(name: str, home: Path | None = None) -> Path:
    """Where a local schedule's promoted checkpoint (``best.ckpt``) is kept."""
    from orchestrator.settings import dl_home

    return (home or dl_home()) / "schedules" / name / "best"


class TickScheduler:
    """The local target's Scheduler (base.Scheduler): the store is the whole schedule."""

    fires_here = True

    def check(self, retries: int | None, window_minutes: int | None) -> None:
        if retries is not None or window_minutes:
            raise UsageError("--retries and --window are for cloud schedules.", "Drop them, or use --target sagemaker.")

    def pointer(self, name: str, options: LaunchOptions) -> str:
        folder = pointer_folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    def create(self, schedule: Schedule, plan: Plan) -> dict:
        return {}  # nothing outside the store: the tick scheduler reads the store

    def set_state(self, schedule: Schedule, *, enabled: bool) -> None:
        """Nothing outside the store: tick reads the schedule's status there."""

    def replace_target(self, schedule: Schedule, plan: Plan) -> None:
        """Nothing outside the store: each firing starts the package the store pins."""

    def delete(self, schedule: Schedule) -> None:
        """Nothing outside the store: the promoted checkpoint stays, like the runs."""

    def copy_to_pointer(self, schedule: Schedule, run: Run, location: str) -> str:
        folder = pointer_folder(schedule.name)
        with replacing(folder / "best.ckpt") as tmp:
            shutil.copyfile(location, tmp)
        return str(folder / "best.ckpt")

    def discover(self, store: Store, schedules: list[Schedule]) -> list[Run]:
        return []  # tick records every run it starts in the store itself
