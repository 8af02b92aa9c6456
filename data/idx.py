"""Reader for the IDX files (optionally gzipped) that MNIST and Fashion-MNIST are distributed as."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
UBYTE = 0x08


def read_idx(path: Path, ndim: int, fix: str) -> np.ndarray:
    """Parse one uint8 IDX file; `fix` is the advice appended to any error about it."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"{path} cannot be read ({err}); {fix}") from None
    # Magic: two zero bytes, a dtype code and the number of dimensions.
    if len(raw) < 4 + 4 * ndim or raw[0] != 0 or raw[1] != 0 or raw[2] != UBYTE or raw[3] != ndim:
        raise DataError(f"{path} is not a {ndim}-dimensional uint8 IDX file (bad magic number); {fix}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"{path} holds {len(body)} bytes of data but its header promises {dims}; {fix}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def find_idx_pair(folders: list[Path], split: str) -> tuple[Path, Path] | None:
    """The first folder holding both the image and label file of `split`, gzipped or not."""
    images_stem, labels_stem = IDX_FILES[split]
    for folder in folders:
        for suffix in (".gz", ""):
            images, labels = folder / (images_stem + suffix), folder / (labels_stem + suffix)
            if images.is_file() and labels.is_file():
                return images, labels
    return None


def load_idx_pair(images_path: Path, labels_path: Path, fix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, H, W) and long labels (N,) from a pair of IDX files."""
    images = read_idx(images_path, 3, fix)
    labels = read_idx(labels_path, 1, fix)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; {fix}")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
