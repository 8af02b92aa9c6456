"""In-memory tensors as a run's data: `fit(train_data=x, test_data=x_test)`.

A split is a torch tensor or a numpy array of images (N, C, H, W), or `ImageTensors`, which
holds one with what is known of each image:

    images   uint8 pixels 0..255, other whole numbers in 0..255, bool (0 and 255), or floats
             in [0, 1], which are quantised to steps of 1/255 as every dataset's pixels are (an
             ImageSet is uint8, so that the data resident on the device takes a byte a pixel)
    labels   (N,) whole numbers >= 0: a class per image, for `groups` labels:ALPHA and the
             clustering accuracy that `evaluate` reports
    groups   (N,) whole numbers: the fixed group of each image; the run trains on these groups
             (their members shuffled per epoch, data/sampling.py `OwnGroups`), as on grouped:BASE

Every part is checked where it enters: type, shape, dtype, values (finite, in range), and the
memory the uint8 copy needs; a fault is one DataError naming the field (`train_data`,
`test_data`) and the fix. Without `test_data`, a tenth of `train_data` is held out for testing
by the rule of folder:PATH (imageset.py `hashed_split`), keyed by each image's bytes (each
group's, with `groups`): the same tensors always split the same way, and copies of one image
never straddle the split.

Group factors (grouped:BASE's angle and gain) are not taken: no part of a run reads them, and
the group-factors experiments draw fresh groups from BASE's own images, which tensors lack.

The run names its data `tensors:HASH` in config.json's `dataset`: HASH is the start of the
sha256 over both splits' contents, so that nobody mistakes it for a registry name, and
environment.json keeps the sha256 of each argument (`content_hash`). No file holds the tensors:
loading `tensors:HASH` by name (`load`) is one line saying to pass them again, as `resume` (which
checks the hash) and `Run.evaluate` (`test_data`) take them.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ..errors import DataError
from .imageset import TEST_FRACTION, ImageSet, empty_images, hashed_split, resize_images, shape_text

logger = logging.getLogger(__name__)

NAME = "tensors"
HASH_DIGITS = 12  # of the sha256 in `tensors:HASH`; environment.json keeps all 64
MAX_CHANNELS = 4  # the most a model takes (model/config.py)
MAX_LABEL = 10**6  # a label is a class index: class names are made up to the largest
CHECK_ELEMENTS = 2**24  # values checked and converted at once: 64 MiB of float32


@dataclass(frozen=True)
class ImageTensors:
    """Images in memory and what is known of each; ``fit(train_data=x)`` is
    ``fit(train_data=ImageTensors(x))``.

    Parameters
    ----------
    images : torch.Tensor or numpy.ndarray
        (N, C, H, W): uint8 pixels, other whole numbers in 0..255, bool, or floats in [0, 1]
        (quantised to steps of 1/255, as every dataset's pixels are).
    labels : torch.Tensor or numpy.ndarray, optional
        (N,) whole numbers >= 0, a class per image: what ``groups="labels:ALPHA"`` and the
        clustering accuracy read.
    groups : torch.Tensor or numpy.ndarray, optional
        (N,) whole numbers, the fixed group of each image: the run trains on these groups (their
        members shuffled per epoch), as on ``grouped:BASE``.

    Raises
    ------
    DataError
        When a run is made of it: a part of the wrong type, shape, dtype or range, or too large,
        named by its field (``train_data``, ``test_data``) with the fix.
    """

    images: Any
    labels: Any = None
    groups: Any = None


class TensorData(NamedTuple):
    """The two splits of a run trained on in-memory images, as `tensor_data` checked them."""

    train: ImageSet
    test: ImageSet
    name: str  # tensors:HASH, the run's `dataset`
    held_out: bool  # the test split was held out of `train_data`


def tensor_data(train_data, test_data=None, image_size: int | None = None) -> TensorData:
    """Both splits of a run trained on in-memory images, checked and named ``tensors:HASH``.

    Parameters
    ----------
    train_data : torch.Tensor, numpy.ndarray or ImageTensors
        Training images shaped (N, C, H, W): uint8 pixels or floats in [0, 1]; an
        :class:`ImageTensors` adds labels (for ``labels:ALPHA`` groups) or fixed groups.
    test_data : same as train_data, optional
        Held-out images of the same shape. Default: a tenth of ``train_data``, chosen by a hash of
        each image (or group), so the same tensors always hold out the same images.
    image_size : int, optional
        Resize both splits to this side (the hash is of the tensors as given). Default: as given.

    Returns
    -------
    TensorData
        ``train`` and ``test`` ImageSets, the ``name`` (``tensors:`` and 12 hex digits of the
        sha256 of both splits' contents) and whether the test split was held out.

    Raises
    ------
    DataError
        A split of the wrong type, shape, dtype or range, or splits of different image shapes; the
        message names the field (``train_data`` or ``test_data``) and the fix.
    """
    train = tensor_set(train_data, "train_data")
    held_out = test_data is None
    if held_out:
        train, test = hold_out(train)
        logger.info(
            f"no `test_data` given: {len(test)} of the {len(train) + len(test)} images of `train_data` are held out "
            f"for testing (a tenth, chosen by a hash of each {'group' if train.groups is not None else 'image'})"
        )
    else:
        test = tensor_set(test_data, "test_data")
        if test.x_shape != train.x_shape:
            raise DataError(
                f"`test_data` holds images of {shape_text(test.x_shape)} but `train_data` of "
                f"{shape_text(train.x_shape)}; give both splits images of one shape"
            )
    digest = hashlib.sha256(f"{train.content_hash} {test.content_hash} {held_out}".encode()).hexdigest()
    name = f"{NAME}:{digest[:HASH_DIGITS]}"
    splits = [replace(s, name=name) for s in (train, test)]
    if image_size is not None:
        for s in splits:
            s.images = resize_images(s.images, image_size)
    return TensorData(*splits, name, held_out)


def tensor_set(value, field: str) -> ImageSet:
    """One split given as `field`: an ImageSet of its checked images, labels and groups, whose
    `content_hash` is the sha256 of them all."""
    if isinstance(value, ImageSet):  # a split of another run's tensors (tensor_data(...).test), say
        value = ImageTensors(value.images, value.labels, value.groups)
    given = value if isinstance(value, ImageTensors) else ImageTensors(value)
    images = as_pixels(given.images, field)
    n = len(images)
    labels = None if given.labels is None else whole_numbers(given.labels, n, f"the labels of `{field}`")
    if labels is not None and not (0 <= labels.min().item() and labels.max().item() <= MAX_LABEL):
        raise DataError(
            f"the labels of `{field}` run from {labels.min().item()} to {labels.max().item()}; a label is a "
            f"class index from 0 to {MAX_LABEL}"
        )
    groups = None if given.groups is None else whole_numbers(given.groups, n, f"the groups of `{field}`")
    content = hashlib.sha256(f"{tuple(images.shape)} labels={labels is not None} groups={groups is not None}".encode())
    for part in (images, labels, groups):
        if part is not None:
            content.update(part.contiguous().numpy())
    held = f"{n} images of {shape_text(images.shape[1:])}"
    return ImageSet(
        images=images,
        name=NAME,
        labels=labels,
        class_names=[] if labels is None else [str(c) for c in range(int(labels.max()) + 1)],
        groups=groups,
        source=f"in-memory tensors `{field}` ({held})",
        content_hash=content.hexdigest(),
    )


def hold_out(data: ImageSet) -> tuple[ImageSet, ImageSet]:
    """(train, test) of `data`: a tenth held out by `hashed_split`, of whole groups where it has them."""
    flat = data.images.flatten(1).numpy()
    if data.groups is None:
        keys = [row.tobytes() for row in flat]
        train_idx, test_idx = hashed_split(keys, TEST_FRACTION)
    else:
        ids = data.groups.unique()
        members = [torch.nonzero(data.groups == g).flatten() for g in ids.tolist()]
        keys = [flat[m.numpy()].tobytes() for m in members]
        train_groups, test_groups = hashed_split(keys, TEST_FRACTION)
        train_idx = sorted(int(i) for g in train_groups for i in members[g])
        test_idx = sorted(int(i) for g in test_groups for i in members[g])
    what = "groups" if data.groups is not None else "images"
    if not test_idx or not train_idx:
        raise DataError(
            f"`train_data` has {len(keys)} {what}, too few to hold a tenth out for testing; "
            "give more, or pass `test_data`"
        )
    train, test = data.subset(torch.tensor(train_idx)), data.subset(torch.tensor(test_idx))
    source = data.source
    train.source = f"{source}, less the tenth of its {what} held out for testing"
    test.source = f"the tenth of the {what} of {source} held out for testing (by a hash of each)"
    return train, test


def as_tensor(value, what: str) -> torch.Tensor:
    """`value`, a torch tensor or a numpy array of numbers, as a tensor (sharing its memory where it can)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(value if value.flags.writeable else value.copy())
    kind = f"a numpy array of {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
    raise DataError(f"{what} must be a torch tensor or a numpy array of numbers, got {kind}")


def as_pixels(value, field: str) -> torch.Tensor:
    """The images of `field` as uint8 (N, C, H, W) on the CPU, checked (module docstring)."""
    x = as_tensor(value, f"`{field}`")
    shape = tuple(x.shape)
    if x.dim() != 4:
        hint = "; add the channel axis, e.g. x.unsqueeze(1)" if x.dim() == 3 else ""
        raise DataError(f"`{field}` has shape {shape}, but images are given as (N, C, H, W){hint}")
    n, channels, height, width = shape
    if n == 0 or height == 0 or width == 0:
        raise DataError(f"`{field}` has shape {shape}: it holds no image, or images of no pixel")
    if channels > MAX_CHANNELS:
        hint = ": for channels-last images pass x.permute(0, 3, 1, 2)" if shape[-1] <= MAX_CHANNELS else ""
        raise DataError(
            f"`{field}` has shape {shape}, {channels} channels, but a model takes 1 to {MAX_CHANNELS} "
            f"(images are (N, C, H, W){hint})"
        )
    if x.is_complex():
        raise DataError(f"`{field}` holds complex numbers ({x.dtype}); pass uint8 pixels or floats in [0, 1]")
    chunk = max(1, CHECK_ELEMENTS // (channels * height * width))
    check_values(x, field, chunk)
    out = empty_images(n, shape[1:], f"`{field}`")
    for start in range(0, n, chunk):
        block = x[start : start + chunk].cpu()  # the caller's memory, where it is on the CPU: never written
        if x.dtype == torch.bool:
            block = block.to(torch.uint8) * 255
        elif x.is_floating_point():
            block = (block.float() * 255).round_()
        out[start : start + chunk] = block.to(torch.uint8)
    return out


def check_values(x: torch.Tensor, field: str, chunk: int) -> None:
    """A DataError unless `x` holds pixels: floats finite and in [0, 1], whole numbers in 0..255
    and not all 0 or 1 (pixels of 0..255 that would be black: floats were meant)."""
    if x.dtype == torch.bool:
        return
    low, high = math.inf, -math.inf
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk]
        if block.is_floating_point():
            bad = ~torch.isfinite(block.flatten(1)).all(1)
            if bad.any():
                first = start + int(bad.nonzero()[0])
                raise DataError(f"`{field}` holds NaN or infinite values (image {first} is the first); remove them")
        lo, hi = torch.aminmax(block)
        low, high = min(low, lo.item()), max(high, hi.item())
    if x.is_floating_point():
        if low < 0 or high > 1:
            raise DataError(
                f"`{field}` holds floats from {low:g} to {high:g}, but float pixels lie in [0, 1]; "
                "divide pixels of 0..255 by 255, or pass them as uint8"
            )
    elif low < 0 or high > 255:
        raise DataError(f"`{field}` holds whole numbers from {low} to {high}, but pixels are 0..255 (uint8)")
    elif high <= 1:
        raise DataError(
            f"`{field}` holds only the whole numbers 0 and 1, which as pixels of 0..255 are black; "
            "pass binary images as floats (x.float()) or bool"
        )


def whole_numbers(value, n: int, what: str) -> torch.Tensor:
    """One whole number per image (N,), as int64."""
    t = as_tensor(value, what)
    if tuple(t.shape) != (n,):
        raise DataError(f"{what} must be one whole number per image, shape ({n},), got shape {tuple(t.shape)}")
    if t.is_floating_point() and not (torch.isfinite(t).all() and (t == t.round()).all()):
        raise DataError(f"{what} must be whole numbers, got fractions, NaN or infinities")
    return t.to(torch.int64).cpu()


def names_tensors(dataset: str) -> bool:
    """Whether a run's `dataset` is in-memory tensors (tensors:HASH)."""
    return dataset.startswith(f"{NAME}:")


def check_name(option: str) -> None:
    """The HASH of tensors:HASH: hexadecimal digits, as a run names its tensors."""
    if not (0 < len(option) <= 64 and all(c in "0123456789abcdef" for c in option)):
        raise DataError(f"'tensors:{option[:20]}' is no name of in-memory tensors, which is tensors:HASH (hex digits)")


def load(split: str, data_dir: Path, image_size: int | None, option: str | None = None) -> ImageSet:
    """What `tensors:HASH` loads by name: nothing, since no file holds the tensors; one line saying
    how to give them again."""
    raise DataError(
        f"dataset tensors:{option} is in-memory tensors that a run was trained on, which no file holds; pass them "
        "again from Python: ugvae.resume(RUN, train_data=..., test_data=...) to train, "
        "run.evaluate(test_data=...) to evaluate"
    )
