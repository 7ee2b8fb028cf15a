"""Tests for the `mnist` trainjob: IDX reading, the data module, and the accuracy promise."""

import gzip
import importlib.util
import struct
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

pytestmark = pytest.mark.train  # every test here trains or imports torch/Lightning

JOB_DIR = Path(__file__).resolve().parents[1] / "trainjobs" / "mnist"


def _load(name: str):
    """Import a job module by file path under a unique name (other jobs also have model.py/data.py)."""
    module_name = f"dl_test_mnist_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, JOB_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


model_mod, data_mod = _load("model"), _load("data")
DigitCNN, DigitsDataModule = model_mod.DigitCNN, data_mod.DigitsDataModule
read_idx, find_idx = data_mod.read_idx, data_mod.find_idx


def write_idx(path: Path, array: np.ndarray, code: int = 0x08) -> Path:
    """Write `array` as an IDX file (gzipped when the name ends in .gz)."""
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_mnist(folder: Path, prefix: str, n: int, seed: int, gz: bool = False):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # the full pixel range is present
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    ext = ".gz" if gz else ""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return images, labels


def job_defaults() -> tuple[dict, dict]:
    with open(JOB_DIR / "job.toml", "rb") as f:
        job = tomllib.load(f)
    return {name: spec["default"] for name, spec in job["params"].items()}, job["trainer"]


def quiet_trainer(**kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(**{**defaults, **kwargs})


# --- IDX files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    read_images = read_idx(write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images))
    read_labels = read_idx(write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels))
    assert read_images.dtype == np.uint8 and read_images.shape == (7, 28, 28)
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)


@pytest.mark.parametrize(
    "code, dtype",
    [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)],
)
def test_idx_other_types_are_big_endian(tmp_path, code, dtype):
    values = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    result = read_idx(write_idx(tmp_path / "values.idx", values, code=code))
    assert result.dtype == np.dtype(dtype) and result.dtype.isnative
    np.testing.assert_array_equal(result, values)


@pytest.mark.parametrize(
    "name",
    [
        "t10k-images-idx3-ubyte",
        "t10k-images-idx3-ubyte.gz",
        "t10k-images.idx3-ubyte",
        "t10k-images.idx3-ubyte.gz",
    ],
)
def test_find_idx_spellings(tmp_path, name):
    write_idx(tmp_path / name, np.zeros((1, 2, 2), np.uint8))
    assert find_idx(tmp_path, "t10k-images-idx3-ubyte") == tmp_path / name


def test_find_idx_missing_names_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        find_idx(tmp_path, "train-labels-idx1-ubyte")
    message = str(error.value)
    assert str(tmp_path) in message and "train-labels-idx1-ubyte.gz" in message and "\n" not in message


def test_idx_errors_name_the_file(tmp_path):
    bad_magic = tmp_path / "bad-magic-idx1-ubyte"
    bad_magic.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 3) + b"abc")
    unknown_type = tmp_path / "unknown-type-idx1-ubyte"
    unknown_type.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 3) + b"abc")
    truncated = write_idx(tmp_path / "truncated-idx3-ubyte", np.ones((4, 5, 5), np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:-10])
    truncated_gz = tmp_path / "truncated-idx3-ubyte.gz"
    truncated_gz.write_bytes(gzip.compress(truncated.read_bytes()))
    cut_gz = tmp_path / "cut-idx3-ubyte.gz"
    cut_gz.write_bytes(gzip.compress(b"\0\0\x08\x01" + struct.pack(">I", 500) + bytes(500))[:-20])
    cases = [
        (bad_magic, "magic"),
        (unknown_type, "type code"),
        (truncated, "truncated"),
        (truncated_gz, "truncated"),
        (cut_gz, "truncated or corrupt gzip"),
    ]
    for path, problem in cases:
        with pytest.raises(ValueError, match=problem) as error:
            read_idx(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="missing-idx1-ubyte"):
        read_idx(tmp_path / "missing-idx1-ubyte")


# --- data module on IDX channels ---------------------------------------------------------------


@pytest.mark.parametrize("test_channel", [False, True])
def test_datamodule_uses_t10k_for_validation(tmp_path, capsys, test_channel):
    train_images, train_labels = write_mnist(tmp_path / "train", "train", 200, seed=2, gz=True)
    test_dir = tmp_path / ("test" if test_channel else "train")
    val_images, val_labels = write_mnist(test_dir, "t10k", 50, seed=3)
    dirs = {"train": str(tmp_path / "train")} | ({"test": str(test_dir)} if test_channel else {})
    dm = DigitsDataModule(batch_size=32, data_dirs=dirs)
    dm.prepare_data()
    dm.setup("fit")
    assert f"t10k files from {test_dir}" in capsys.readouterr().out

    x, y = dm.train_set.tensors
    x_val, y_val = dm.val_set.tensors
    assert x.shape == (200, 1, 28, 28) and x_val.shape == (50, 1, 28, 28)
    assert x.dtype == x_val.dtype == torch.float32 and y.dtype == y_val.dtype == torch.int64
    torch.testing.assert_close(y, torch.from_numpy(train_labels.astype(np.int64)))
    torch.testing.assert_close(y_val, torch.from_numpy(val_labels.astype(np.int64)))
    # normalised with the training statistics; undoing that gives pixels / 255
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-4
    pixels = x_val * dm.std + dm.mean
    assert pixels.min().item() == pytest.approx(0, abs=1e-5)
    assert pixels.max().item() == pytest.approx(1, abs=1e-5)
    torch.testing.assert_close(pixels[:, 0], torch.from_numpy(val_images / 255.0).float(), atol=1e-5, rtol=0)

    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (32, 1, 28, 28) and yb.shape == (32,)


def test_datamodule_holds_out_val_fraction_without_t10k(tmp_path, capsys):
    _, labels = write_mnist(tmp_path, "train", 200, seed=4)
    splits = []
    for _ in range(2):
        dm = DigitsDataModule(val_fraction=0.2, data_dirs={"train": str(tmp_path)}, seed=5)
        dm.setup("fit")
        splits.append((dm.train_set.tensors, dm.val_set.tensors))
    assert "holding out 0.2 of train" in capsys.readouterr().out
    (x, y), (x_val, y_val) = splits[0]
    assert len(y) == 160 and len(y_val) == 40
    assert sorted(y.tolist() + y_val.tolist()) == sorted(labels.tolist())
    assert not set(map(bytes, x_val.numpy())) & set(map(bytes, x.numpy()))  # disjoint
    for digit in range(10):  # every class gives about val_fraction of its images
        assert abs((y_val == digit).sum() - 0.2 * (labels == digit).sum()) <= 1
    torch.testing.assert_close(splits[1][1][0], x_val)  # deterministic for a seed


def test_datamodule_missing_train_files_fail_early(tmp_path):
    dm = DigitsDataModule(data_dirs={"train": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        dm.prepare_data()


def test_short_fit_on_28x28(tmp_path):
    write_mnist(tmp_path, "train", 200, seed=6)
    write_mnist(tmp_path, "t10k", 50, seed=7)
    L.seed_everything(0)
    model = DigitCNN(channels=8)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, enable_checkpointing=False)
    trainer.fit(model, DigitsDataModule(batch_size=16, data_dirs={"train": str(tmp_path)}))
    assert trainer.global_step == 2
    assert {"train_loss", "val_loss", "val_acc"} <= set(trainer.callback_metrics)
    assert torch.isfinite(trainer.callback_metrics["train_loss"])


# --- the default run: accuracy promise and checkpoints -----------------------------------------


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One fit with job.toml's defaults on the scikit-learn fallback (shared by the tests below)."""
    params, trainer_cfg = job_defaults()
    L.seed_everything(0)
    model = DigitCNN(lr=params["lr"], channels=params["channels"], dropout=params["dropout"])
    dm = DigitsDataModule(batch_size=params["batch_size"], val_fraction=params["val_fraction"])
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(monitor="val_acc", mode="max")
    trainer = quiet_trainer(
        max_epochs=trainer_cfg["max_epochs"],
        default_root_dir=tmp_path_factory.mktemp("mnist"),
        callbacks=[checkpoint],
    )
    start = time.perf_counter()
    trainer.fit(model, dm)
    return trainer, model, dm, time.perf_counter() - start


def test_defaults_reach_95_percent_on_fallback(default_run):
    trainer, _, dm, seconds = default_run
    print(f"default run: val_acc={trainer.callback_metrics['val_acc']:.4f} in {seconds:.1f} s")
    assert dm.train_set.tensors[0].shape[1:] == (1, 8, 8)
    assert len(dm.train_set) + len(dm.val_set) == 1797
    assert trainer.current_epoch == job_defaults()[1]["max_epochs"]
    assert trainer.callback_metrics["val_acc"] >= 0.95


def test_checkpoint_round_trip(default_run, tmp_path):
    trainer, model, dm, _ = default_run
    path = tmp_path / "final.ckpt"
    trainer.save_checkpoint(path)
    loaded = DigitCNN.load_from_checkpoint(path)
    assert dict(loaded.hparams) == dict(model.hparams)

    x, y = next(iter(dm.val_dataloader()))
    model.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        predictions = loaded.predict_step((x, y), 0)
        assert torch.equal(predictions, model(x).argmax(dim=1))
    assert (predictions == y).float().mean() >= 0.9

    best = DigitCNN.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert trainer.checkpoint_callback.best_model_score >= trainer.callback_metrics["val_acc"]
    assert quiet_trainer().test(best, dm, verbose=False)[0]["test_acc"] >= 0.95
