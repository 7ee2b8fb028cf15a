"""Learning curves: per-epoch metrics of runs as a terminal chart or a PNG.

Pure functions over plain data (``{label: [(epoch, value), ...]}``); the caller fetches the
rows (api.epoch_metrics). The text chart needs nothing but Python; matplotlib is imported only
inside :func:`png_chart`, so ``dl --help`` stays fast.
"""

from __future__ import annotations

import math
from pathlib import Path

from orchestrator.errors import UsageError

Series = dict[str, list[tuple[float, float]]]
MARKERS = "*o+x#@%&=~"


def series(rows_by_run: dict[str, list[dict]], metric: str) -> Series:
    """``{run: [(epoch (1-based), value), ...]}`` for one metric; a run without it is a usage error
    that names the metrics it has."""
    out: Series = {}
    for run_id, rows in rows_by_run.items():
        points = [(row["epoch"] + 1, row[metric]) for row in rows if row.get(metric) is not None]
        if not points:
            known = sorted({k for row in rows for k in row} - {"epoch", "step"})
            hint = f"It has: {', '.join(known)}." if known else "It has no per-epoch metrics yet (dl show RUN)."
            raise UsageError(f"Run {run_id} has no per-epoch metric {metric!r}.", f"{hint} Pick one with --metric.")
        out[run_id] = points
    return out


def _ticks(low: float, high: float) -> tuple[float, float]:
    if math.isclose(low, high):
        pad = abs(low) * 0.05 or 0.5
        return low - pad, high + pad
    return low, high


def terminal_chart(data: Series, metric: str, *, width: int = 78, height: int = 15) -> str:
    """A chart in plain characters, at most ``width`` columns: one marker per run, lines drawn
    between epochs, a y axis with three labels, epochs along x, and a legend (marker, run, final value)."""
    if not data:
        raise UsageError("Nothing to plot.", "Give at least one run.")
    xs = [x for points in data.values() for x, _ in points]
    ys = [y for points in data.values() for _, y in points]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = _ticks(min(ys), max(ys))
    labels = [f"{v:.4g}" for v in (y_hi, (y_lo + y_hi) / 2, y_lo)]
    margin = max(len(label) for label in labels) + 1
    cols = max(10, width - margin - 1)
    grid = [[" "] * cols for _ in range(height)]

    def col(x: float) -> int:
        return 0 if x_hi == x_lo else round((x - x_lo) / (x_hi - x_lo) * (cols - 1))

    def row(y: float) -> int:
        return height - 1 - round((y - y_lo) / (y_hi - y_lo) * (height - 1))

    for index, points in enumerate(data.values()):
        mark = MARKERS[index % len(MARKERS)]
        points = sorted(points)
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            c0, c1 = col(x0), col(x1)
            for c in range(c0, c1 + 1):
                t = 0.0 if c1 == c0 else (c - c0) / (c1 - c0)
                grid[row(y0 + t * (y1 - y0))][c] = mark
        for x, y in points:
            grid[row(y)][col(x)] = mark

    lines = [f"{metric} by epoch"]
    label_rows = {0: labels[0], (height - 1) // 2: labels[1], height - 1: labels[2]}
    for r, cells in enumerate(grid):
        lines.append(f"{label_rows.get(r, ''):>{margin - 1}} |{''.join(cells)}".rstrip())
    lines.append(" " * margin + "+" + "-" * cols)
    left, right = f"{x_lo:g}", f"epoch {x_hi:g}"
    lines.append(" " * (margin + 1) + left + right.rjust(cols - len(left)))
    for index, (run_id, points) in enumerate(data.items()):
        final = sorted(points)[-1][1]
        lines.append(
            f"  {MARKERS[index % len(MARKERS)]} {run_id}  ({metric} {final:.4g} at epoch {sorted(points)[-1][0]:g})"
        )
    return "\n".join(lines)


def png_chart(data: Series, metric: str, path: Path, *, title: str | None = None) -> int:
    """Write the curves to ``path`` as a PNG (matplotlib, Agg backend); return the number of lines drawn."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise UsageError(
            "Writing a PNG needs matplotlib.", "Install it (pip install matplotlib), or leave out -o for a text chart."
        ) from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8, 5), dpi=100)
    axes = figure.add_subplot()
    for run_id, points in data.items():
        points = sorted(points)
        axes.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3, label=run_id)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.set_title(title or f"{metric} by epoch")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    path = Path(path)
    if not path.parent.is_dir():
        raise UsageError(f"Cannot write {path}: no folder {path.parent}.", "Create it, or give another -o path.")
    figure.savefig(path, format="png")
    return len(axes.get_lines())
