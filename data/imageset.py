"""ImageSet, the in-memory dataset every loader returns; the memory check made before images are allocated
(with the working memory of resizing and decoding counted); resizing, the held-out split of data
that comes without one (`hashed_split`) and the other tensor helpers."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..errors import DataError


@dataclass
class ImageSet:
    """A dataset in memory, as every loader returns it.

    Attributes
    ----------
    images : torch.Tensor
        uint8 (N, C, H, W); :func:`to_unit_float` makes the floats models read.
    name : str
        The dataset's name.
    labels : torch.Tensor or None
        long (N,), with `class_names`.
    attributes : torch.Tensor or None
        (N, A), with `attribute_names` (CelebA).
    domains : torch.Tensor or None
        long (N,), with `domain_names`: set on ``A+B`` mixtures only.
    groups, factors : torch.Tensor or None
        On ``grouped:`` data: each image's fixed group (N,) and its group's hidden factors (N, F),
        with `factor_names`; for evaluation, never shown to a model.
    notice : str or None
        What the user should know about this data (an offline fallback, skipped files).
    source : str
        Where the images were read from: files, a download, a fallback.

    Raises
    ------
    DataError
        On construction, images that are not uint8 (N, C, H, W), or per-image fields of another length.
    """

    images: torch.Tensor  # uint8 (N, C, H, W)
    name: str
    labels: torch.Tensor | None = None  # long (N,)
    class_names: list[str] = field(default_factory=list)
    attributes: torch.Tensor | None = None  # (N, A)
    attribute_names: list[str] = field(default_factory=list)
    domains: torch.Tensor | None = None  # long (N,), set only on mixed sets
    domain_names: list[str] = field(default_factory=list)
    notice: str | None = None
    source: str = ""  # where the images were read from: files, a download, a fallback (provenance)
    # Set only on grouped datasets (data/grouped.py): the fixed group of each image and the
    # hidden factors of its group, repeated per image; for evaluation, never shown to a model.
    groups: torch.Tensor | None = None  # long (N,)
    factors: torch.Tensor | None = None  # float (N, F)
    factor_names: list[str] = field(default_factory=list)
    # Set only on in-memory tensors (data/tensors.py): the sha256 of the argument they came from.
    content_hash: str | None = None

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"dataset '{self.name}' images are {self.images.dtype} with shape {tuple(self.images.shape)}; "
                "a loader must return uint8 images shaped (N, C, H, W)"
            )
        n = len(self.images)
        for what in ("labels", "attributes", "domains", "groups", "factors"):
            value = getattr(self, what)
            if value is not None and len(value) != n:
                raise DataError(
                    f"dataset '{self.name}' has {n} images but {len(value)} {what}; give one {what[:-1]} per image"
                )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def x_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def float(self) -> torch.Tensor:
        """Images as float32 in [0, 1]."""
        return to_unit_float(self.images)

    def subset(self, idx) -> ImageSet:
        def pick(t):
            return None if t is None else t[idx]

        return replace(
            self,
            images=self.images[idx],
            labels=pick(self.labels),
            attributes=pick(self.attributes),
            domains=pick(self.domains),
            groups=pick(self.groups),
            factors=pick(self.factors),
        )


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any shape) as float32 in [0, 1], what every model and guide reads.

    Parameters
    ----------
    images : torch.Tensor
        uint8 pixels, 0 to 255.

    Examples
    --------
    >>> to_unit_float(torch.tensor([0, 51, 255], dtype=torch.uint8))
    tensor([0.0000, 0.2000, 1.0000])
    """
    return images.float().div_(255.0)


def shape_text(shape) -> str:
    return "x".join(str(s) for s in shape)


def available_memory() -> int | None:
    """Bytes of memory this machine can still hand out (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(n: int, shape, what: str, extra: int = 0):
    """A DataError unless n uint8 images of `shape`, plus `extra` bytes of working memory held with them,
    fit in the memory still free: one clear error before allocating, not an out-of-memory kill half-way."""
    needed = n * math.prod(int(side) for side in shape) + extra
    free = available_memory()
    if free is not None and needed > free:
        raise DataError(
            f"{what}: {n} images of {shape_text(shape)} need {needed / 2**30:.1f} GiB but "
            f"{free / 2**30:.1f} GiB of memory are free; use fewer images or a smaller `image_size`"
        )


def empty_images(n: int, shape, what: str, extra: int = 0) -> torch.Tensor:
    """uint8 (n, *shape) for `what`, checked first to fit in memory with `extra` bytes of working memory."""
    check_fits(n, shape, what, extra)
    try:
        return torch.empty((n, *shape), dtype=torch.uint8)
    except (RuntimeError, MemoryError):
        raise DataError(
            f"{what}: {n} images of {shape_text(shape)} do not fit in memory; "
            "use fewer images or a smaller `image_size`"
        ) from None


# Float copies made while resizing stay under this size, unless a single image needs more.
RESIZE_CHUNK_BYTES = 2**28


def resize_chunk(shape, size: int) -> int:
    """Images resized at once: as many as keep one float copy, at the larger of both sizes, under RESIZE_CHUNK_BYTES."""
    channels, height, width = (int(s) for s in shape)
    return max(1, RESIZE_CHUNK_BYTES // (4 * channels * max(height * width, size * size)))


def resize_workspace(count: int, shape, size: int) -> int:
    """Bytes that resizing `count` images of `shape` holds at its peak besides the output (measured with
    torch 2.x on CPU): first a float copy at the input size, the float result and, when shrinking, the
    antialiasing pass between them (one side resized); then the float result and its uint8 copy."""
    channels, height, width = (int(s) for s in shape)
    first = 4 * height * width + 4 * size * size + (4 * size * max(height, width) if size < max(height, width) else 0)
    then = 4 * size * size + size * size
    # Allocator and kernel overhead, measured at a few MB.
    return count * channels * max(first, then) + 2**23


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) images to (size, size) in chunks, refused before allocating if they do not fit."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    n, c = images.shape[:2]
    chunk = resize_chunk(images.shape[1:], size)
    extra = resize_workspace(min(chunk, n), images.shape[1:], size)
    out = empty_images(n, (c, size, size), f"resizing to {size}x{size}", extra)
    # Antialiasing only matters when shrinking; it would blur an upscale for nothing.
    antialias = size < max(images.shape[-2:])
    for start in range(0, n, chunk):
        # Channels as images: the one-channel kernel makes no channels-last copies (half the peak for RGB).
        block = images[start : start + chunk].flatten(0, 1).unsqueeze(1).float()
        # Rebinding `block` frees the input copy before the uint8 one is made (resize_workspace).
        block = F.interpolate(block, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
        out[start : start + chunk] = block.round_().clamp_(0, 255).to(torch.uint8).view(-1, c, size, size)
    return out


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grayscale -> RGB by repeating the channel; any other change would invent or drop colour."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    raise DataError(
        f"cannot convert images with {images.shape[1]} channels to {channels}; "
        "only grayscale (1) to RGB (3) is supported, so convert the images to RGB first"
    )


TEST_FRACTION = 0.1  # of data that comes without a test split (folder:PATH, in-memory tensors)


def hashed_split(keys: list[bytes], test_fraction: float = TEST_FRACTION) -> tuple[list[int], list[int]]:
    """(train, test) positions of items given by their `keys` (a path's bytes, an image's): ranked
    by the sha1 of the key, the last `test_fraction` are the test split, each part in the items'
    order. The split depends on the items alone, adding one moves few others, and items of one
    key stay on one side."""
    digests = [hashlib.sha1(key).digest() for key in keys]
    ranked = sorted(range(len(keys)), key=lambda i: (digests[i], i))
    cut = len(keys) - int(len(keys) * test_fraction)
    while 0 < cut < len(keys) and digests[ranked[cut - 1]] == digests[ranked[cut]]:
        cut += 1  # equal keys (copies of an image) on the train side
    return sorted(ranked[:cut]), sorted(ranked[cut:])


def stratified_split(labels: torch.Tensor, train_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a per-class train/test split; both halves are shuffled so classes are not in blocks."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_train = round(train_fraction * len(members))
        train.append(members[:n_train])
        test.append(members[n_train:])
    train, test = torch.cat(train), torch.cat(test)
    return (
        train[torch.randperm(len(train), generator=generator)],
        test[torch.randperm(len(test), generator=generator)],
    )
