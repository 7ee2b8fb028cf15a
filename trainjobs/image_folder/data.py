"""Labelled images from a folder: ``train/<class>/*.jpg`` and ``val/<class>/*.jpg``.

The ``train`` channel holds either both splits (``train/``, and ``val/``, ``valid/`` or
``validation/``) or the class folders themselves; a ``val`` channel, when given, is the
validation split. Without any validation images, ``val_fraction`` of every class is held out.
Without a ``train`` channel the job draws a small shapes data set (circle, square, triangle)
so that it runs offline out of the box.

Decoding and augmentation happen in DataLoader worker processes (``num_workers``; ``auto``
sizes them from the instance's SM_NUM_CPUS).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
VAL_NAMES = ("val", "valid", "validation")
# ImageNet's statistics: what torchvision's pre-trained weights expect (their transforms() say so).
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SHAPES_SIZE = 64  # side of the images drawn when there is no train channel


def class_folders(root: Path) -> dict[str, list[Path]]:
    """``{class: sorted image files}`` for every visible sub-folder of ``root`` that holds images."""
    found: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if images:
            found[folder.name] = images
    return found


def locate(data_dirs: dict[str, str]) -> tuple[Path, Path | None]:
    """(train folder, validation folder or None) from the channels."""
    channel = Path(data_dirs["train"])
    if not channel.is_dir():
        raise FileNotFoundError(f"the train channel {channel} is not a folder")
    train = channel / "train" if (channel / "train").is_dir() else channel
    val = next((channel / n for n in VAL_NAMES if (channel / n).is_dir()), None) if train != channel else None
    for name in VAL_NAMES:
        if name in data_dirs:
            val = Path(data_dirs[name])
    return train, val


def split(labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): about ``val_fraction`` of every class held out, the same ones for the same seed."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    labels_array = np.asarray(labels)
    for label in np.unique(labels_array):
        members = rng.permutation(np.flatnonzero(labels_array == label))
        held = max(1, round(len(members) * val_fraction)) if len(members) > 1 else 0
        val += members[:held].tolist()
        train += members[held:].tolist()
    return sorted(train), sorted(val)


class ImageFiles(Dataset):
    """(image tensor, label) pairs, decoded from files on demand (in the DataLoader's workers)."""

    def __init__(self, samples: list[tuple[Path, int]], transform) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except Exception as exc:  # PIL raises several types for a bad file; name the file
            raise ValueError(f"{path} is not a readable image ({type(exc).__name__}: {exc})") from None
        return self.transform(rgb), label


def transforms(image_size: int, augment: bool):
    """(train, val) transforms: random resized crops and flips for training, a centre crop for validation."""
    from torchvision.transforms import v2

    to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    val = v2.Compose([v2.Resize(round(image_size * 256 / 224)), v2.CenterCrop(image_size), *to_tensor])
    if not augment:
        return val, val
    train = v2.Compose([v2.RandomResizedCrop(image_size, scale=(0.6, 1.0)), v2.RandomHorizontalFlip(), *to_tensor])
    return train, val


class ImageFolderDataModule(L.LightningDataModule):
    def __init__(
        self,
        image_size: int = 224,
        batch_size: int = 32,
        val_fraction: float = 0.2,
        augment: bool = True,
        data_dirs: dict[str, str] | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        data_dirs = dict(data_dirs or {})
        if "train" not in data_dirs:
            from shapes import CLASSES, make_image_folder  # the job's own module, beside this one

            self._scratch = tempfile.TemporaryDirectory(prefix="dl-shapes-")  # removed when training ends
            folder = Path(self._scratch.name)
            make_image_folder(folder, train=60, val=20, size=SHAPES_SIZE, seed=seed)
            data_dirs["train"] = str(folder)
            origin = f"no 'train' channel: drew a shapes data set ({', '.join(CLASSES)}, {SHAPES_SIZE}x{SHAPES_SIZE})"
            if image_size > SHAPES_SIZE:  # enlarging drawn images adds compute, not information
                origin += f", image_size {image_size} -> {SHAPES_SIZE}"
                image_size = SHAPES_SIZE
        else:
            origin = f"train channel {data_dirs['train']}"
        train_root, val_root = locate(data_dirs)
        train = class_folders(train_root)
        if len(train) < 2:
            raise ValueError(
                f"{train_root} has {len(train)} class folder(s) with images; expected train/<class>/*.jpg "
                "with at least two classes"
            )
        self.classes = sorted(train)
        index = {name: i for i, name in enumerate(self.classes)}
        self.train_samples = [(path, index[name]) for name in self.classes for path in train[name]]
        if val_root is not None:
            val = class_folders(val_root)
            stray = sorted(set(val) - set(index))
            if stray:
                raise ValueError(f"{val_root} has class folder(s) {', '.join(stray)} that {train_root} lacks")
            self.val_samples = [(path, index[name]) for name in sorted(val) for path in val[name]]
            how = f"validation from {val_root}"
        else:
            keep, held = split([label for _, label in self.train_samples], val_fraction, seed)
            self.val_samples = [self.train_samples[i] for i in held]
            self.train_samples = [self.train_samples[i] for i in keep]
            how = f"no validation folder: holding out {val_fraction:g} of every class"
        if not self.val_samples:
            raise ValueError(f"no validation images ({how}); add val/<class>/ folders")
        sizes = [sum(1 for _, y in self.train_samples if y == i) for i in range(len(self.classes))]
        counts = ", ".join(f"{name} {size}" for name, size in zip(self.classes, sizes))
        print(
            f"data: {origin}; {how}; {len(self.train_samples)} train, {len(self.val_samples)} val images; "
            f"{len(self.classes)} classes ({counts})",
            flush=True,
        )
        self.train_transform, self.val_transform = transforms(image_size, augment)

    def model_kwargs(self) -> dict:
        """What only the data knows, for the model: its classes."""
        return {"classes": list(self.classes)}

    def _loader(self, samples, transform, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            ImageFiles(samples, transform),
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self):
        return self._loader(self.train_samples, self.train_transform, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_samples, self.val_transform, shuffle=False)

    def predict_dataloader(self):
        return self._loader(self.val_samples, self.val_transform, shuffle=False)
