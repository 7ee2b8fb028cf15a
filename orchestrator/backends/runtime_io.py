"""What every backend and dl's runtime (runtime/dl_entry.py) agree on, and its one reader each.

The runtime depends on nothing in dl, so this is the other half of its contract, shared by
all backends (none imports another for it):

- hyperparameters travel as CreateTrainingJob's HyperParameters map, every value JSON-encoded
  into a string (:func:`hyperparameters_json`; :func:`decode_hyperparameters` reads them back
  as the toolkit does), with framework settings under ``sagemaker_*`` names
  (:data:`TORCH_DISTRIBUTED` starts the program under torchrun);
- the runtime writes ``metrics.csv`` (one row per epoch: epoch, step, then metric columns)
  and ``summary.json`` (``{"final": {metric: value}, ...}``) into its output data folder
  (``output/data`` locally, ``output.tar.gz`` on SageMaker); summary.json is written
  atomically, after the model, once training has finished: its presence says so;
- a warm start (``dl launch --from RUN``, a schedule's promoted best) arrives as the data
  channel :data:`INIT_CHANNEL` holding one ``.ckpt`` file.

Standard library only.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

TORCH_DISTRIBUTED = "sagemaker_torch_distributed_enabled"
METRICS_CSV = "metrics.csv"
SUMMARY_JSON = "summary.json"
INIT_CHANNEL = "init"  # the data channel of a warm start


def hyperparameters_json(values: dict[str, object]) -> dict[str, str]:
    """The CreateTrainingJob HyperParameters map: every value JSON-encoded into a string."""
    return {key: json.dumps(value) for key, value in values.items()}


def decode_hyperparameters(raw: dict[str, str]) -> dict[str, object]:
    """The map back as the toolkit reads it: ``json.loads`` of each value, the text itself where
    that fails (a value set outside dl); tuples come back as lists."""
    values: dict[str, object] = {}
    for key, text in raw.items():
        try:
            values[key] = json.loads(text)
        except (ValueError, TypeError):
            values[key] = text
    return values


def epoch_rows(text: str) -> list[dict]:
    """metrics.csv text as one dict per epoch: epoch and step as ints, metrics as floats; empty
    cells, cells that are not numbers and rows without an epoch are left out."""
    rows = []
    for raw in csv.DictReader(io.StringIO(text)):
        try:
            row: dict = {"epoch": int(raw["epoch"]), "step": int(raw["step"]) if raw.get("step") else None}
        except (KeyError, TypeError, ValueError):
            continue
        for key, value in raw.items():
            if key in ("epoch", "step") or value in (None, ""):
                continue
            try:
                row[key] = float(value)
            except ValueError:
                continue
        rows.append(row)
    return rows


def final_metrics(rows: list[dict]) -> dict[str, float]:
    """Each metric's last value over ``rows`` (epoch_rows), as the runtime's summary would give it."""
    final: dict[str, float] = {}
    for row in rows:
        final.update({k: v for k, v in row.items() if k not in ("epoch", "step")})
    return final


def read_epoch_rows(data_dir: Path) -> list[dict]:
    """epoch_rows of ``data_dir``/metrics.csv; [] when there is none yet."""
    path = data_dir / METRICS_CSV
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return epoch_rows(handle.read())


def summary_final(text: str) -> dict[str, float]:
    """The final metrics of a summary.json text; {} when it is empty or not JSON."""
    try:
        return dict(json.loads(text or "{}").get("final", {}))
    except (ValueError, AttributeError):
        return {}


def read_outcome(data_dir: Path) -> dict:
    """The runtime's summary.json in ``data_dir``, else ``{"final": ...}`` from its metrics.csv
    (a run killed before it wrote its summary)."""
    summary = data_dir / SUMMARY_JSON
    if summary.is_file():
        try:
            return json.loads(summary.read_text())
        except json.JSONDecodeError:
            pass
    return {"final": final_metrics(read_epoch_rows(data_dir))}
