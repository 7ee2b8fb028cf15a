"""Per-epoch metrics of each run (the run_metrics table)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable


class EpochMetricsTable:
    """The run_metrics table, on a Connection's ``_db`` (mixed into Store)."""

    _db: sqlite3.Connection

    def replace_epoch_metrics(self, run_id: str, rows: Iterable[dict]) -> int:
        """Make ``rows`` (dicts with epoch, step and metric values) the run's per-epoch metrics.

        The run's earlier rows go in the same transaction: a resumed run's metrics.csv holds
        every epoch so far, so the store always mirrors the latest file. NaN values (a diverged
        loss) are left out. Returns the number of values stored."""
        values = []
        for row in rows:
            epoch, step = int(row["epoch"]), row.get("step")
            for name, value in row.items():
                if name not in ("epoch", "step") and value is not None and value == value:  # NaN: not stored
                    values.append((run_id, epoch, None if step is None else int(step), name, float(value)))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM run_metrics WHERE run_id = ?", (run_id,))
            self._db.executemany(
                "INSERT OR REPLACE INTO run_metrics (run_id, epoch, step, name, value) VALUES (?, ?, ?, ?, ?)", values
            )
            self._record_run(run_id)  # RunTable's: the run's record holds its epochs too
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return len(values)

    def epoch_metrics(self, run_id: str) -> list[dict]:
        """One dict per epoch, in order: ``{"epoch": 0, "step": 7, "val_acc": 0.9, ...}``."""
        by_epoch: dict[int, dict] = {}
        rows = self._db.execute(
            "SELECT epoch, step, name, value FROM run_metrics WHERE run_id = ? ORDER BY epoch, name", (run_id,)
        )
        for epoch, step, name, value in rows:
            entry = by_epoch.setdefault(epoch, {"epoch": epoch, "step": step})
            entry[name] = value
        return list(by_epoch.values())
