"""scikit-learn's 8x8 handwritten digits (1,797 images), split 80/20 per class with a fixed seed."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError
from .imageset import ImageSet, stratified_split

SPLIT_SEED = 0


def load(split: str, data_dir: Path, image_size: int | None) -> ImageSet:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("dataset 'digits' needs scikit-learn; pip install scikit-learn") from None
    bunch = load_digits()
    # Pixel values run 0..16; stretch them to the 0..255 every other set uses.
    images = torch.from_numpy(bunch.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    train_idx, test_idx = stratified_split(labels, 0.8, SPLIT_SEED)
    idx = train_idx if split == "train" else test_idx
    names, source = [str(d) for d in range(10)], "scikit-learn's load_digits, split 80/20 per class"
    return ImageSet(images=images[idx], labels=labels[idx], class_names=names, name="digits", source=source)
