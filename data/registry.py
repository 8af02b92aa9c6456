"""DATASETS, the loaders by name, and load_dataset, which also parses names like folder:PATH and mnist+fashion-mnist.

A loader is `load(split, data_dir, image_size, **extras) -> ImageSet`; the registry passes only
the extras a loader names:

    option     the text after NAME: (folder:PATH, synthetic:N, grouped:BASE)
    download   False: read only what is already there; nothing is downloaded, cached or
               created (read-only commands pass it, so a shared run's config.json cannot
               make them create folders)
    load_base  a function loading another dataset by name with the same split, folder,
               size and `download` (grouped:BASE), so no loader imports the registry
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path

from ..errors import DataError
from . import celeba, digits, fashion_mnist, folder, grouped, mnist, synthetic
from .imageset import ImageSet, resize_images
from .mixing import mix

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
# Datasets whose option is a path, which may hold '+'.
PATH_OPTIONS = ("folder",)


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | None = None,
    image_size: int | None = None,
    download: bool = True,
) -> ImageSet:
    """One dataset, or several joined by '+' into a mixed-domain set, as uint8 images resized to image_size if given.

    download=False reads only what is on disk and never creates `data_dir` (see the module docstring).
    """
    if split not in SPLITS:
        raise DataError(f"split '{split}' is unknown; choose one of {', '.join(SPLITS)}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"`image_size` {image_size!r} is not a positive whole number; set it to e.g. 64")
    root = Path(data_dir or DEFAULT_DATA_DIR).expanduser()
    parts = split_mixture(name)
    for part in parts:
        check_known(part)
    loaded = [load_one(part, split, root, image_size, download) for part in parts]
    return loaded[0] if len(loaded) == 1 else mix(loaded)


def check_dataset_name(name: str) -> None:
    """Raise the DataError of an unknown dataset name before anything is read (also each part of A+B)."""
    for part in split_mixture(name):
        check_known(part)


def check_known(part: str) -> None:
    """A DataError naming the unknown dataset in `part` (also the BASE of grouped:BASE) and the closest name."""
    key, _, option = part.partition(":")
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DataError(
            f"dataset '{key}' is unknown; {hint}choose one of {', '.join(DATASETS)} (folder as folder:PATH)"
        )
    if "load_base" in inspect.signature(DATASETS[key]).parameters and option:
        check_known(option)


def load_one(name: str, split: str, root: Path, image_size: int | None, download: bool = True) -> ImageSet:
    key, has_option, option = name.partition(":")
    check_known(name)
    loader = DATASETS[key]
    takes = inspect.signature(loader).parameters
    extras = {}
    if has_option:
        if "option" not in takes:
            raise DataError(f"dataset '{key}' takes no ':' option; write just '{key}'")
        extras["option"] = option
    if "download" in takes:
        extras["download"] = download
    if "load_base" in takes:
        extras["load_base"] = lambda base: load_one(base, split, root, image_size, download)
    result = loader(split, root, image_size, **extras)
    if image_size is not None and result.x_shape[1:] != (image_size, image_size):
        result.images = resize_images(result.images, image_size)
    return result


def split_mixture(name: str) -> list[str]:
    """Split on '+'; a piece that starts no known dataset is glued back only onto a path (folder:PATH),
    which may contain '+', so a mistyped second dataset is named as such."""
    parts: list[str] = []
    for piece in name.split("+"):
        if parts and piece.partition(":")[0] not in DATASETS and takes_path(parts[-1]):
            parts[-1] += "+" + piece
        else:
            parts.append(piece)
    return parts


def takes_path(part: str) -> bool:
    """True when `part` ends in a path: folder:PATH, also as the BASE of grouped:folder:PATH."""
    key, _, option = part.partition(":")
    if key in PATH_OPTIONS:
        return True
    return key in DATASETS and "load_base" in inspect.signature(DATASETS[key]).parameters and takes_path(option)
