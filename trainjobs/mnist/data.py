"""Digit data: MNIST IDX files from a 'train' data channel, or scikit-learn's bundled 8x8 digits offline."""

import gzip
import math
import struct
import zlib
from pathlib import Path

import lightning as L
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

# IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into an array in native byte order."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        try:
            data = f.read()
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: truncated or corrupt gzip data ({e})") from None
    if len(data) < 4 or data[:2] != b"\0\0":
        raise ValueError(f"{path}: not an IDX file (magic {data[:4].hex()!r}, expected 0000<type><ndim>)")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x} (known: 08 09 0b 0c 0d 0e)")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ValueError(f"{path}: truncated header ({len(data)} bytes, {ndim} dims need {offset})")
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    dtype = np.dtype(IDX_DTYPES[code])
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - offset != expected:
        problem = "truncated" if len(data) - offset < expected else "trailing bytes"
        raise ValueError(f"{path}: {problem}: shape {shape} needs {expected} data bytes, file has {len(data) - offset}")
    array = np.frombuffer(data, dtype, count=math.prod(shape), offset=offset).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def find_idx(folder: str | Path, stem: str) -> Path:
    """Find `stem`, `stem.gz`, or the dotted spelling (`train-images.idx3-ubyte[.gz]`) in `folder`."""
    folder = Path(folder)
    dotted = stem.replace("-idx", ".idx")
    names = [stem, f"{stem}.gz", dotted, f"{dotted}.gz"]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no {' / '.join(names)} in {folder}")


def split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic, class-balanced split: every class gives about `val_fraction` of its items."""
    n = len(labels)
    order = np.random.default_rng(seed).permutation(n)
    order = order[np.argsort(labels[order], kind="stable")]  # grouped by class, shuffled within
    position = np.arange(n)
    is_val = np.floor((position + 1) * val_fraction) > np.floor(position * val_fraction)
    return np.sort(order[~is_val]), np.sort(order[is_val])


def _as_tensors(images: np.ndarray, labels: np.ndarray, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"expected N images of HxW and N labels, got {images.shape} and {labels.shape}")
    x = torch.from_numpy(images.astype(np.float32) / scale).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


class DigitsDataModule(L.LightningDataModule):
    """Images (N, 1, H, W) float32, normalised with the training set's mean/std; labels int64."""

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        data_dirs: dict[str, str] | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.train_set = self.val_set = None
        self.mean = self.std = None

    def _test_dir(self) -> Path | None:
        """The folder with t10k-* files: the 'test' channel first, then the 'train' channel."""
        dirs = self.hparams.data_dirs
        for folder in filter(None, (dirs.get("test"), dirs["train"])):
            try:
                find_idx(folder, TEST[0])
                return Path(folder)
            except FileNotFoundError:
                pass
        return None

    def prepare_data(self):
        # Nothing to download; fail early, with the expected file names, if a 'train' channel lacks them.
        if "train" in (self.hparams.data_dirs or {}):
            for stem in TRAIN:
                find_idx(self.hparams.data_dirs["train"], stem)

    def setup(self, stage: str):
        if self.train_set is not None:
            return
        hp = self.hparams
        if "train" in (hp.data_dirs or {}):
            folder = Path(hp.data_dirs["train"])
            x, y = _as_tensors(*(read_idx(find_idx(folder, stem)) for stem in TRAIN), scale=255.0)
            test_dir = self._test_dir()
            if test_dir is not None:
                x_val, y_val = _as_tensors(*(read_idx(find_idx(test_dir, s)) for s in TEST), scale=255.0)
                source = f"MNIST IDX from {folder}, validation = t10k files from {test_dir}"
            else:
                train_idx, val_idx = split_indices(y.numpy(), hp.val_fraction, hp.seed)
                x, y, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
                source = f"MNIST IDX from {folder}, no t10k files: holding out {hp.val_fraction:g} of train"
        else:
            digits = load_digits()
            x, y = _as_tensors(digits.images, digits.target, scale=16.0)
            train_idx, val_idx = split_indices(digits.target, hp.val_fraction, hp.seed)
            x, y, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
            source = f"scikit-learn digits ({len(digits.target)} images, 8x8), no 'train' channel given"
        print(f"data: {source} ({len(y)} train, {len(y_val)} val, {x.shape[-2]}x{x.shape[-1]})", flush=True)

        self.mean, self.std = x.mean().item(), x.std().item()
        self.train_set = TensorDataset((x - self.mean) / self.std, y)
        self.val_set = TensorDataset((x_val - self.mean) / self.std, y_val)

    def _loader(self, dataset, shuffle: bool = False) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self):
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set)

    def test_dataloader(self):
        return self._loader(self.val_set)  # t10k when given, else the held-out split

    def predict_dataloader(self):
        return self._loader(self.val_set)
