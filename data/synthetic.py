"""Small deterministic fake digits for tests and benchmarks: class-specific Gaussian blobs, jittered, plus noise."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError
from .imageset import ImageSet, check_fits

SIDE = 28
NUM_CLASSES = 10
BLOBS_PER_CLASS = 3
DEFAULT_TRAIN = 1000
PROTOTYPE_SEED = 1234
SPLIT_SEEDS = {"train": 0, "test": 1}
CHUNK = 2048  # images drawn at once
MAX_DIGITS = 15


def load(split: str, data_dir: Path, image_size: int | None, option: str | None = None) -> ImageSet:
    """`synthetic:N` asks for N training images; the test split always has a fifth of that."""
    n_train = DEFAULT_TRAIN if option is None else parse_size(option)
    n = n_train if split == "train" else max(1, n_train // 5)
    check_fits(n, (1, SIDE, SIDE), f"synthetic:{n_train}", extra=blobs_workspace(n))
    images, labels = make_blobs(n, torch.Generator().manual_seed(SPLIT_SEEDS[split]))
    source = "synthetic digits generated with fixed seeds"
    names = [str(c) for c in range(NUM_CLASSES)]
    return ImageSet(images=images, labels=labels, class_names=names, name="synthetic", source=source)


def parse_size(option: str) -> int:
    """N of synthetic:N, a positive whole number of at most MAX_DIGITS digits (far beyond memory)."""
    if not (option.isascii() and option.isdigit() and len(option) <= MAX_DIGITS and int(option) >= 1):
        shown = option if len(option) <= 20 else option[:20] + "..."
        raise DataError(f"synthetic size '{shown}' is not a positive whole number; write it as synthetic:1000")
    return int(option)


def blobs_workspace(n: int, chunk: int = CHUNK) -> int:
    """Bytes make_blobs holds besides its images: a label, a permutation entry and an index of 8 bytes
    each per image, and for one chunk the float distances to each blob, their maximum and the noise."""
    return 24 * n + min(n, chunk) * SIDE * SIDE * 4 * (BLOBS_PER_CLASS + 3)


def make_blobs(n: int, generator: torch.Generator, chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    # Prototypes come from their own seed so train and test share the same classes.
    prototypes = torch.Generator().manual_seed(PROTOTYPE_SEED)
    centres = 6 + 16 * torch.rand(NUM_CLASSES, BLOBS_PER_CLASS, 2, generator=prototypes)
    labels = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=generator)]
    grid = torch.stack(torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij"), -1).float()
    images = torch.empty((n, 1, SIDE, SIDE), dtype=torch.uint8)
    # Chunks keep the (n, blobs, H, W) distance tensor small for benchmark-sized sets.
    for start in range(0, n, chunk):
        block = labels[start : start + chunk]
        m = len(block)
        jittered = centres[block] + 1.5 * torch.randn(m, BLOBS_PER_CLASS, 2, generator=generator)
        width = 2.0 + 0.5 * torch.rand(m, 1, 1, 1, generator=generator)
        squared = ((grid[None, None] - jittered[:, :, None, None, :]) ** 2).sum(-1)
        picture = torch.exp(-squared / (2 * width**2)).amax(1)
        picture = picture + 0.05 * torch.randn(picture.shape, generator=generator)
        images[start : start + m, 0] = (picture.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels.long()
