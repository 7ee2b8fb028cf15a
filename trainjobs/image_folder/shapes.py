"""A small labelled image folder drawn with Pillow: circles, squares and triangles.

The job uses it when no ``train`` channel is given, so that ``dl launch image_folder --local``
works offline out of the box; the tests use it to make their image folders. Every image has
a grey background of random brightness, one shape of random size, place and turn, and pixel
noise. Each class has its own shape and its own band of hues (circles red to orange, squares
green, triangles blue to violet), so that even a network trained from scratch on a few dozen
images per class tells them apart. Same seed, same files.
"""

from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")


# hue bands (degrees) per class; a class not listed here takes an even share of the colour wheel
HUES = {"circle": (0, 40), "square": (95, 150), "triangle": (210, 280)}


def _fill(shape: str, rng: np.random.Generator) -> tuple[int, int, int]:
    low, high = HUES.get(shape, (0, 360))
    hue = rng.uniform(low, high) / 360
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
    return tuple(int(255 * c) for c in rgb)


def draw(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One ``size`` x ``size`` RGB image of ``shape``."""
    grey = int(rng.integers(20, 110))
    image = Image.new("RGB", (size, size), (grey, grey, grey))
    pen = ImageDraw.Draw(image)
    radius = rng.uniform(0.18, 0.35) * size
    cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
    fill = _fill(shape, rng)
    if shape == "circle":
        pen.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    elif shape == "square":
        side = radius * 0.9
        pen.rectangle([cx - side, cy - side, cx + side, cy + side], fill=fill)
    elif shape == "triangle":
        turn = rng.uniform(0, 2 * math.pi)
        corners = [
            (cx + radius * math.cos(turn + k * 2 * math.pi / 3), cy + radius * math.sin(turn + k * 2 * math.pi / 3))
            for k in range(3)
        ]
        pen.polygon(corners, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(CLASSES)}")
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_image_folder(
    root: str | Path,
    *,
    classes: tuple[str, ...] = CLASSES,
    train: int = 60,
    val: int = 20,
    size: int = 64,
    seed: int = 0,
    suffix: str = ".png",
) -> Path:
    """Write ``root/train/<class>/*`` and ``root/val/<class>/*`` (``train`` and ``val`` images per class;
    no ``val/`` at all when ``val`` is 0). ``suffix`` picks the format (.png, .jpg). Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for shape in classes if count else ():
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                draw(shape, size, rng).save(folder / f"{shape}_{i:04d}{suffix}")
    return root
