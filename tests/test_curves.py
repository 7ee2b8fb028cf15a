"""Per-epoch metrics in the store, `dl runs --sort`, `dl plot`, `dl compare` and `dl sweep`:
real tiny playground runs, real files, real SQLite."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from orchestrator import api, plotting, store
from orchestrator.store import Run, RunStatus, Store
from tests.conftest import invoke, runs_json, wait_for

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA = ["--set", "dataset=xor", "--set", "samples=120", "--set", "batch_size=30"]
TINY_PLAYGROUND = [*DATA, "--set", "max_epochs=3"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A real 2x2 sweep (lr x width) on the playground, two at a time, waited for."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DL_HOME", str(home))
        mp.delenv("DL_TARGET", raising=False)
        result = invoke(
            "sweep", "playground", "--local", *TINY_PLAYGROUND, "--set", "lr=0.05,0.001", "--set", "width=4,16",
            "--parallel", "2", "--wait",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        ids = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("Launched ")]
        sweep_id = next(line.split()[1].rstrip(":") for line in result.stdout.splitlines() if line.startswith("Sweep "))
        yield {"home": home, "ids": ids, "sweep": sweep_id, "output": result.stdout}


@pytest.fixture
def in_swept(swept, monkeypatch):
    monkeypatch.setenv("DL_HOME", str(swept["home"]))
    monkeypatch.delenv("DL_TARGET", raising=False)
    return swept


# -- sweep ------------------------------------------------------------------------------------


@pytest.mark.train
def test_sweep_launches_the_grid_under_one_id(in_swept):
    ids, sweep_id = in_swept["ids"], in_swept["sweep"]
    assert len(ids) == 4 and len(set(ids)) == 4
    runs = {r["id"]: r for r in runs_json()}
    assert {runs[i]["sweep"] for i in ids} == {sweep_id}
    grid = {(runs[i]["params"]["lr"], runs[i]["params"]["width"]) for i in ids}
    assert grid == {(0.05, 4), (0.05, 16), (0.001, 4), (0.001, 16)}
    assert all(runs[i]["status"] == "Completed" and runs[i]["params"]["max_epochs"] == 3 for i in ids)
    assert f"Sweep {sweep_id}: 4 runs, at most 2 at once." in in_swept["output"]


@pytest.mark.train
def test_sweep_never_had_more_than_parallel_runs_unfinished(in_swept):
    """When each run was created, fewer than 2 of the runs before it had not yet ended."""
    runs = sorted((api.show(i) for i in in_swept["ids"]), key=lambda r: r.created_at)
    for index, run in enumerate(runs):
        unfinished = [r for r in runs[:index] if r.ended_at is None or r.ended_at > run.created_at]
        assert len(unfinished) < 2, f"{run.id} started while {[r.id for r in unfinished]} still ran"
    assert runs[2].created_at >= min(r.ended_at for r in runs[:2]), "the third run waited for a slot"


@pytest.mark.train
def test_sweep_with_parallel_one_runs_them_one_after_another(dl_home):
    result = invoke("sweep", "playground", "--local", *DATA, "--set", "max_epochs=1", "--set", "lr=0.1,0.01")
    assert result.exit_code == 0, result.output
    ids = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("Launched ")]
    first = api.show(ids[0])
    assert first.status is RunStatus.COMPLETED and api.show(ids[1]).created_at >= first.ended_at
    last = wait_for(lambda: (r := api.show(ids[1])).status.is_terminal and r, timeout=120, what="the last run")
    assert last.status is RunStatus.COMPLETED


@pytest.mark.train
def test_compare_sweep_ranks_by_the_monitored_metric(in_swept):
    result = invoke("compare", "--sweep", in_swept["sweep"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Ranked by val_acc (highest first)."
    header = lines[1].split()
    assert header[:5] == ["#", "RUN", "STATUS", "LR", "WIDTH"] and "DATASET" not in header
    rows = [line.split() for line in lines[2:6]]
    assert sorted(row[1] for row in rows) == sorted(in_swept["ids"])
    accs = [float(row[header.index("val_acc")]) for row in rows]
    assert accs == sorted(accs, reverse=True)
    as_json = json.loads(invoke("compare", "--sweep", in_swept["sweep"], "--json").stdout)
    assert as_json["monitor"] == "val_acc" and as_json["differing"] == ["lr", "width"]
    json_accs = [r["metrics"]["val_acc"] for r in as_json["runs"]]
    assert json_accs == sorted(json_accs, reverse=True) and [r["id"] for r in as_json["runs"]] == [r[1] for r in rows]


@pytest.mark.train
def test_compare_runs_shows_only_the_params_that_differ(in_swept):
    runs = [api.show(i) for i in in_swept["ids"]]
    same_width = [r.id for r in runs if r.params["width"] == 4]
    result = invoke("compare", *same_width)
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    assert header[:3] == ["RUN", "STATUS", "LR"] and "WIDTH" not in header and "SAMPLES" not in header
    assert [line.split()[0] for line in result.stdout.splitlines()[1:3]] == same_width


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "lr=0.1,,0.2"], "has an empty value"),
        (["--set", "lr=0.1,0.1"], "lists a value twice"),
        (["--set", "lr=0.1", "--set", "lr=0.2"], "is given more than once"),
        # Each point's values are typed once the local backend has found torch and Lightning.
        pytest.param(["--set", "lr=0.1,fast"], "Parameter lr expects a number", marks=pytest.mark.train),
        (["--set", "depth=1,2"], "Unknown parameter 'depth'"),
        ([], "needs values to try"),
    ],
)
def test_bad_sweep_input_is_one_line_and_starts_nothing(dl_home, args, message):
    result = invoke("sweep", "playground", "--local", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output and "Launched" not in result.stdout
    assert not (dl_home / "dl.db").exists() or Store(dl_home).count() == 0


def test_grid_points_are_the_cartesian_product_in_order():
    grid = api.parse_grid(["lr=0.1,0.01", "width=8,32,64"])
    points = api.grid_points(grid)
    assert len(points) == 6 and points[0] == {"lr": "0.1", "width": "8"} and points[-1] == {"lr": "0.01", "width": "64"}


# -- per-epoch metrics in the store ---------------------------------------------------------------


@pytest.mark.train
def test_epoch_metrics_are_stored_when_the_run_ends(in_swept):
    run_id = in_swept["ids"][0]
    rows = Store(in_swept["home"]).epoch_metrics(run_id)
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    assert all({"val_acc", "val_loss", "train_loss", "train_acc"} <= set(row) for row in rows)
    assert [row["step"] for row in rows] == [2, 4, 6]  # 60 train points, batches of 30
    final = api.show(run_id).metrics
    assert rows[-1]["val_acc"] == pytest.approx(final["val_acc"])
    assert api.epoch_metrics(run_id) == rows


@pytest.mark.train
def test_epoch_metrics_fall_back_to_the_csv_when_the_store_has_none(in_swept):
    run_id = in_swept["ids"][1]
    db = Store(in_swept["home"])
    stored = db.epoch_metrics(run_id)
    db.replace_epoch_metrics(run_id, [])
    try:
        assert db.epoch_metrics(run_id) == []
        from_csv = api.epoch_metrics(run_id)
        assert [r["epoch"] for r in from_csv] == [0, 1, 2]
        assert from_csv[-1]["val_acc"] == pytest.approx(stored[-1]["val_acc"])
    finally:
        db.replace_epoch_metrics(run_id, stored)


def test_replace_epoch_metrics_replaces_a_resumed_runs_rows(tmp_path):
    db = Store(tmp_path)
    db.insert(Run(id="r1", job="j", target="local", status=RunStatus.COMPLETED, created_at=1.0))
    db.insert(Run(id="r2", job="j", target="local", status=RunStatus.COMPLETED, created_at=2.0))
    db.replace_epoch_metrics("r2", [{"epoch": 0, "step": 5, "loss": 9.0}])
    db.replace_epoch_metrics("r1", [{"epoch": 0, "step": 5, "loss": 1.0}, {"epoch": 1, "step": 10, "loss": 0.5}])
    # The resumed attempt's metrics.csv holds every epoch so far, one of them rewritten.
    db.replace_epoch_metrics("r1", [{"epoch": 0, "step": 5, "loss": 1.0}, {"epoch": 1, "step": 10, "loss": 0.4},
                                    {"epoch": 2, "step": 15, "loss": 0.3}])  # fmt: skip
    assert db.epoch_metrics("r1") == [
        {"epoch": 0, "step": 5, "loss": 1.0},
        {"epoch": 1, "step": 10, "loss": 0.4},
        {"epoch": 2, "step": 15, "loss": 0.3},
    ]
    assert db.epoch_metrics("r2") == [{"epoch": 0, "step": 5, "loss": 9.0}]
    assert db.replace_epoch_metrics("r2", [{"epoch": 0, "step": 5, "loss": float("nan"), "acc": 0.5}]) == 1
    assert db.epoch_metrics("r2") == [{"epoch": 0, "step": 5, "acc": 0.5}], "a diverged (NaN) value is left out"


def test_a_schema_2_database_migrates_to_3_keeping_its_runs(tmp_path):
    raw = sqlite3.connect(tmp_path / "dl.db")
    for script in store._MIGRATIONS[:2]:
        raw.executescript(script)
    raw.execute("PRAGMA user_version = 2")
    raw.execute(
        "INSERT INTO runs (id, job, target, status, created_at) VALUES ('old', 'mnist', 'local', 'Completed', 1)"
    )
    raw.commit()
    raw.close()
    db = Store(tmp_path)
    old = db.get("old")
    assert old.sweep is None and old.status is RunStatus.COMPLETED and db.epoch_metrics("old") == []
    assert store.SCHEMA_VERSION >= 3 and db._db.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    db.update("old", sweep="s1")
    assert [r.id for r in db.list(sweep="s1")] == ["old"]


# -- dl runs --sort -----------------------------------------------------------------------------


@pytest.mark.train
def test_runs_sort_ranks_by_final_metric_with_runs_lacking_it_last(in_swept):
    Store(in_swept["home"]).insert(
        Run(id="no-metrics", job="playground", target="local", status=RunStatus.FAILED, created_at=time.time())
    )
    try:
        down = json.loads(invoke("runs", "--sort", "val_acc", "--json").stdout)
        up = json.loads(invoke("runs", "--sort", "val_loss:asc", "--json").stdout)
        top = json.loads(invoke("runs", "--sort", "val_acc", "-n", "1", "--json").stdout)
    finally:
        Store(in_swept["home"])._db.execute("DELETE FROM runs WHERE id = 'no-metrics'")
    accs = [r["metrics"]["val_acc"] for r in down[:4]]
    assert accs == sorted(accs, reverse=True) and down[-1]["id"] == "no-metrics"
    losses = [r["metrics"]["val_loss"] for r in up[:4]]
    assert losses == sorted(losses) and up[-1]["id"] == "no-metrics"
    assert [r["id"] for r in top] == [down[0]["id"]]


@pytest.mark.train
@pytest.mark.parametrize(
    "sort, message", [("val_accuracy", "No run here has a metric 'val_accuracy'"), ("val_acc:up", "METRIC[:asc|:desc]")]
)
def test_runs_sort_bad_metric_is_one_line(in_swept, sort, message):
    result = invoke("runs", "--sort", sort)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output
    if sort == "val_accuracy":
        assert "Known metrics: train_acc, train_loss, val_acc, val_loss." in result.stderr


# -- dl plot ------------------------------------------------------------------------------------


@pytest.mark.train
def test_plot_in_the_terminal_has_one_legend_entry_per_run_and_fits_80_columns(in_swept):
    ids = in_swept["ids"][:3]
    result = invoke("plot", *ids)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "val_acc by epoch"
    legend = [line for line in lines if line.startswith("  ") and "(val_acc " in line]
    assert [line.split()[1] for line in legend] == ids
    assert [line.split()[0] for line in legend] == list(plotting.MARKERS[:3])
    assert max(len(line) for line in lines) <= 80
    body = "\n".join(lines[1:-4])
    for marker in plotting.MARKERS[:3]:
        assert marker in body, f"no {marker!r} curve drawn"


def test_terminal_chart_places_points_by_value():
    chart = plotting.terminal_chart({"up": [(1, 0.0), (2, 1.0)], "flat": [(1, 0.5), (2, 0.5)]}, "m", width=40, height=5)
    lines = chart.splitlines()
    assert lines[1].split("|")[0].strip() == "1" and lines[1].endswith("*"), "the top row holds the rising run's end"
    assert lines[5].split("|")[0].strip() == "0" and lines[5].split("|")[1].startswith("*"), "the bottom row its start"
    assert lines[3].split("|")[0].strip() == "0.5"
    assert set(lines[3].split("|")[1]) == {"o"}, "the flat run at 0.5 fills the middle row"


@pytest.mark.train
def test_plot_png_is_a_png_with_one_line_per_run(in_swept, tmp_path):
    import matplotlib.image

    out = tmp_path / "curves.png"
    result = invoke("plot", *in_swept["ids"], "--metric", "train_loss", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "(4 curves of train_loss)" in result.stdout
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = matplotlib.image.imread(out).shape
    assert (width, height) == (800, 500)
    data = plotting.series({i: api.epoch_metrics(i) for i in in_swept["ids"][:2]}, "val_loss")
    assert plotting.png_chart(data, "val_loss", tmp_path / "two.png") == 2


@pytest.mark.train
@pytest.mark.parametrize(
    "args, message",
    [
        (["--metric", "val_accuracy"], "has no per-epoch metric 'val_accuracy'"),
        (["no-such-run"], "No run 'no-such-run'"),
        (["-o", "/no/such/folder/c.png"], "no folder /no/such/folder"),
    ],
)
def test_plot_bad_input_is_one_line(in_swept, args, message):
    run_args = [] if args[0] == "no-such-run" else [in_swept["ids"][0]]
    result = invoke("plot", *run_args, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


@pytest.mark.train
def test_compare_unknown_run_or_sweep_is_one_line(in_swept):
    for args, message in ((["nope"], "No run 'nope'"), (["--sweep", "nope"], "No sweep 'nope'"), ([], "Nothing to")):
        result = invoke("compare", *args)
        assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_help_stays_free_of_heavy_imports():
    import subprocess
    import sys

    code = (
        "import sys; from orchestrator.cli import app; "
        "print(sorted(m for m in ('matplotlib', 'numpy', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert Path(plotting.__file__).read_text().count("import matplotlib") == 1


@pytest.mark.train
def test_a_stopped_then_resumed_run_keeps_every_epoch_once(dl_home):
    """Stopped: the epochs so far are stored; resumed: the store holds all of them, steps going on."""
    from tests.conftest import launched_id

    args = ["--set", "dataset=circle", "--set", "samples=2000", "--set", "batch_size=10", "--set", "max_epochs=20"]
    run_id = launched_id(invoke("launch", "playground", "--local", *args).stdout)
    log = Path(api.show(run_id).log_uri)
    wait_for(lambda: log.is_file() and "epoch 2/20" in log.read_text(), what="two epochs")
    stopped = invoke("stop", run_id, "--grace", "60")
    assert stopped.exit_code == 0, stopped.output
    run = api.show(run_id)
    assert run.status is RunStatus.STOPPED, run.failure_reason
    before = api.epoch_metrics(run_id)
    assert 2 <= len(before) < 20 and [r["epoch"] for r in before] == list(range(len(before)))

    resumed = invoke("resume", run_id, "--follow")
    assert resumed.exit_code == 0, resumed.output
    after = Store(dl_home).epoch_metrics(run_id)
    assert [r["epoch"] for r in after] == list(range(20))
    steps = [r["step"] for r in after]
    assert steps == [steps[0] * (e + 1) for e in range(20)], "the step count went on from the checkpoint"
    assert after[: len(before) - 1] == before[: len(before) - 1]
