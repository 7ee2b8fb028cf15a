"""Tests for the `playground` trainjob: its data sets, and the lesson it teaches about depth."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from tests.conftest import REPO, invoke, launched_id, load_job_module

pytestmark = pytest.mark.train  # every test here trains or imports torch/Lightning

JOB_DIR = REPO / "trainjobs" / "playground"
data_mod = load_job_module(JOB_DIR / "data.py", "dl_test_playground_data")
model_mod = load_job_module(JOB_DIR / "model.py", "dl_test_playground_model")
make_dataset, ToyDataModule, PlaygroundMLP = data_mod.make_dataset, data_mod.ToyDataModule, model_mod.PlaygroundMLP


@pytest.fixture(autouse=True)
def _restore_threads():
    """The model trains on one thread (its setup says so); leave the other tests the machine's default."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def fit(dataset: str, *, hidden_layers: int, width: int, epochs: int, seed: int = 0, **kwargs) -> float:
    """Train as the runtime does (seeded, Lightning Trainer) and return the final test accuracy."""
    model_kw = {k: kwargs.pop(k) for k in ("activation", "lr", "l1", "l2") if k in kwargs}
    L.seed_everything(seed, verbose=False)
    model = PlaygroundMLP(hidden_layers=hidden_layers, width=width, **model_kw)
    data = ToyDataModule(dataset=dataset, seed=seed, **kwargs)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    return float(trainer.callback_metrics["val_acc"])


@pytest.mark.parametrize("name", data_mod.DATASETS)
def test_datasets_are_balanced_scaled_and_deterministic(name):
    x, y = make_dataset(name, 300, 0.1, seed=3)
    assert x.shape == (300, 2) and x.dtype == np.float32 and y.shape == (300,)
    assert set(np.unique(y)) == {0, 1}
    assert 0.35 < y.mean() < 0.65, "both classes are about equally common"
    assert np.abs(x).max() < 2.0, "inputs are scaled to about [-1, 1]"
    x2, y2 = make_dataset(name, 300, 0.1, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = make_dataset(name, 300, 0.1, seed=4)
    assert not np.array_equal(x, x3), "another seed draws other points"


def test_noise_moves_points_and_unknown_dataset_is_refused():
    clean, _ = make_dataset("spiral", 200, 0.0, seed=0)
    noisy, _ = make_dataset("spiral", 200, 0.3, seed=0)
    assert np.abs(clean - noisy).mean() > 0.05
    with pytest.raises(ValueError, match="circle, xor, gauss, spiral"):
        make_dataset("moons", 100, 0.0, seed=0)


def test_split_follows_test_fraction():
    data = ToyDataModule(dataset="xor", samples=200, test_fraction=0.25, seed=1)
    data.setup("fit")
    assert len(data.train_set) == 150 and len(data.val_set) == 50


def test_hidden_layers_zero_is_a_linear_classifier():
    model = PlaygroundMLP(hidden_layers=0)
    assert [type(m).__name__ for m in model.net] == ["Linear"]
    deep = PlaygroundMLP(hidden_layers=3, width=5, activation="sigmoid")
    assert sum(type(m).__name__ == "Linear" for m in deep.net) == 4
    assert sum(type(m).__name__ == "Sigmoid" for m in deep.net) == 3


def test_l1_and_l2_add_to_the_training_loss():
    import torch

    plain = PlaygroundMLP(hidden_layers=1, width=4)
    regularised = PlaygroundMLP(hidden_layers=1, width=4, l1=0.1, l2=0.2)
    regularised.load_state_dict(plain.state_dict())
    weights = [p for n, p in plain.named_parameters() if n.endswith("weight")]
    expected = 0.1 * sum(w.abs().sum() for w in weights) + 0.2 * sum(w.pow(2).sum() for w in weights)
    assert float(plain.penalty()) == 0.0
    assert torch.isclose(regularised.penalty(), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_depth_lesson_on_two_spirals(seed):
    """No hidden layer cannot separate the spirals; two hidden layers of 32 can."""
    linear = fit("spiral", hidden_layers=0, width=8, epochs=30, seed=seed, batch_size=50, lr=0.03)
    deep = fit("spiral", hidden_layers=2, width=32, epochs=150, seed=seed, batch_size=50, lr=0.03, activation="relu")
    assert linear <= 0.65, f"a linear classifier reached {linear:.3f} on spirals"
    assert deep >= 0.95, f"two hidden layers reached only {deep:.3f} on spirals"


@pytest.mark.parametrize("name", ["circle", "xor", "gauss"])
def test_each_easy_dataset_is_learnt_by_two_layers(name):
    assert fit(name, hidden_layers=2, width=16, epochs=40, batch_size=125, lr=0.05, activation="relu") >= 0.95


def test_launch_through_the_runtime(dl_home):
    result = invoke(
        "launch", "playground", "--local", "--follow", "--set", "dataset=xor", "--set", "samples=200",
        "--set", "max_epochs=3", "--set", "activation=relu", "--set", "lr=0.05",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run_id = launched_id(result.stdout)
    assert "data: xor, noise 0: 100 train, 100 test points" in result.stdout
    assert "epoch 3/3" in result.stdout
    shown = json.loads(invoke("show", run_id, "--json").stdout)
    assert shown["status"] == "Completed" and shown["params"]["dataset"] == "xor"
    assert 0.5 < shown["metrics"]["val_acc"] <= 1.0
    assert (Path(shown["checkpoints"]) / "best.ckpt").is_file()


def test_bad_choice_is_refused_before_launch(dl_home):
    result = invoke("launch", "playground", "--local", "--set", "dataset=moons")
    assert result.exit_code == 2
    assert "must be one of circle, xor, gauss, spiral" in result.stderr
    assert "Traceback" not in result.output
