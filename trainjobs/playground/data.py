"""The playground's four 2-D data sets, generated with numpy from the seed: no files, no download."""

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

DATASETS = ("circle", "xor", "gauss", "spiral")
RADIUS = 5.0  # the playground draws its points in [-5, 5]^2; inputs are divided by this


def _circle(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 inside radius 2.5, class 0 in a ring from 3.5 to 5."""
    half = n // 2
    r = np.concatenate([rng.uniform(0, RADIUS * 0.5, half), rng.uniform(RADIUS * 0.7, RADIUS, n - half)])
    angle = rng.uniform(0, 2 * np.pi, n)
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
    x += rng.uniform(-RADIUS, RADIUS, x.shape) * noise
    y = (np.hypot(x[:, 0], x[:, 1]) < RADIUS * 0.6).astype(np.int64)  # the label follows the noisy point
    return x, y


def _xor(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Quadrants: class 1 where x and y have the same sign; points keep a margin from the axes."""
    x = rng.uniform(-RADIUS, RADIUS, (n, 2))
    x += np.where(x > 0, 0.3, -0.3)  # the playground's padding
    y = (x[:, 0] * x[:, 1] >= 0).astype(np.int64)
    x += rng.uniform(-RADIUS, RADIUS, x.shape) * noise
    return x, y


def _gauss(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian clusters around (2, 2) and (-2, -2); noise widens them."""
    half = n // 2
    y = np.concatenate([np.ones(half, np.int64), np.zeros(n - half, np.int64)])
    centres = np.where(y[:, None] == 1, 2.0, -2.0)
    spread = 0.5 + 3.5 * noise  # the playground's variance scale, 0.5 (clean) to 4
    return centres + rng.normal(0, spread, (n, 2)), y


def _spiral(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals of 1.75 turns each."""
    half = n // 2
    parts, labels = [], []
    for label, delta, count in ((1, 0.0, half), (0, np.pi, n - half)):
        i = np.arange(count)
        r = i / count * RADIUS
        t = 1.75 * i / count * 2 * np.pi + delta
        points = np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
        parts.append(points + rng.uniform(-1, 1, points.shape) * noise * RADIUS / 2)
        labels.append(np.full(count, label, np.int64))
    return np.concatenate(parts), np.concatenate(labels)


_GENERATORS = {"circle": _circle, "xor": _xor, "gauss": _gauss, "spiral": _spiral}


def make_dataset(name: str, samples: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` points (float32, scaled to about [-1, 1]) and 0/1 labels, shuffled; same seed, same data."""
    if name not in _GENERATORS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    rng = np.random.default_rng(seed)
    x, y = _GENERATORS[name](samples, noise, rng)
    order = rng.permutation(samples)
    return (x[order] / RADIUS).astype(np.float32), y[order]


def split(n: int, test_fraction: float) -> int:
    """How many of ``n`` shuffled points go to training (at least one on each side)."""
    return min(n - 1, max(1, round(n * (1 - test_fraction))))


class ToyDataModule(L.LightningDataModule):
    """Points (N, 2) float32 and labels int64; the first part trains, the rest is the test set (val)."""

    def __init__(
        self,
        dataset: str = "circle",
        noise: float = 0.0,
        samples: int = 500,
        test_fraction: float = 0.5,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        data_dirs: dict[str, str] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["data_dirs"])
        self.train_set = self.val_set = None

    def setup(self, stage: str):
        if self.train_set is not None:
            return
        hp = self.hparams
        x, y = make_dataset(hp.dataset, hp.samples, hp.noise, hp.seed)
        cut = split(len(y), hp.test_fraction)
        self.train_set = TensorDataset(torch.from_numpy(x[:cut]), torch.from_numpy(y[:cut]))
        self.val_set = TensorDataset(torch.from_numpy(x[cut:]), torch.from_numpy(y[cut:]))
        print(f"data: {hp.dataset}, noise {hp.noise:g}: {cut} train, {len(y) - cut} test points", flush=True)

    def _loader(self, dataset, shuffle: bool = False) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset, batch_size=self.hparams.batch_size, shuffle=shuffle, num_workers=workers,
            persistent_workers=workers > 0,
        )  # fmt: skip

    def train_dataloader(self):
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set)

    def test_dataloader(self):
        return self._loader(self.val_set)
