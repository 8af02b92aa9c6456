"""DATASETS, the loaders by name, and load_dataset, which also parses names like folder:PATH and mnist+fashion-mnist."""

from __future__ import annotations

import inspect
from pathlib import Path

from ..errors import DataError
from . import celeba, digits, fashion_mnist, folder, grouped, mnist, synthetic
from .imageset import ImageSet, resize_images
from .mixing import mix

# A loader is load(split, data_dir, image_size[, option]) -> ImageSet; one taking `option` accepts NAME:OPTION.
DATASETS = {
    "mnist": mnist.load,
    "fashion-mnist": fashion_mnist.load,
    "digits": digits.load,
    "celeba": celeba.load,
    "folder": folder.load,
    "synthetic": synthetic.load,
    "grouped": grouped.load,  # grouped:BASE, groups sharing hidden factors (data/grouped.py)
}
SPLITS = ("train", "test")
DEFAULT_DATA_DIR = "./.data"


def load_dataset(
    name: str, split: str = "train", data_dir: str | None = None, image_size: int | None = None
) -> ImageSet:
    """One dataset, or several joined by '+' into a mixed-domain set, as uint8 images resized to image_size if given."""
    if split not in SPLITS:
        raise DataError(f"split '{split}' is unknown; choose one of {', '.join(SPLITS)}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image size {image_size!r} is not a positive whole number; pass e.g. --image-size 64")
    root = Path(data_dir or DEFAULT_DATA_DIR).expanduser()
    parts = [load_one(part, split, root, image_size) for part in split_mixture(name)]
    return parts[0] if len(parts) == 1 else mix(parts)


def check_dataset_name(name: str) -> None:
    """Raise the DataError of an unknown dataset name before anything is read (also each part of A+B)."""
    for part in split_mixture(name):
        key = part.partition(":")[0]
        if key not in DATASETS:
            raise DataError(f"dataset '{part}' is unknown; choose one of {', '.join(DATASETS)} (folder as folder:PATH)")


def load_one(name: str, split: str, root: Path, image_size: int | None) -> ImageSet:
    key, has_option, option = name.partition(":")
    if key not in DATASETS:
        raise DataError(f"dataset '{name}' is unknown; choose one of {', '.join(DATASETS)} (folder as folder:PATH)")
    loader = DATASETS[key]
    if has_option:
        if "option" not in inspect.signature(loader).parameters:
            raise DataError(f"dataset '{key}' takes no ':' option; write just '{key}'")
        result = loader(split, root, image_size, option=option)
    else:
        result = loader(split, root, image_size)
    if image_size is not None and result.x_shape[1:] != (image_size, image_size):
        result.images = resize_images(result.images, image_size)
    return result


def split_mixture(name: str) -> list[str]:
    """Split on '+', gluing back pieces that start no known dataset, so a folder path may contain '+'."""
    parts: list[str] = []
    for piece in name.split("+"):
        if parts and piece.partition(":")[0] not in DATASETS:
            parts[-1] += "+" + piece
        else:
            parts.append(piece)
    return parts
