"""CelebA with its 40 attributes, centre-cropped to 148 and resized as the official UG-VAE code does."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..files import atomic_write
from ..progress import progress
from .download import quiet_network
from .imageset import ImageSet

DEFAULT_SIZE = 64
CROP = 148


def load(split: str, data_dir: Path, image_size: int | None, download: bool = True) -> ImageSet:
    size = image_size or DEFAULT_SIZE
    # Decoding 200k JPEGs takes minutes; the decoded uint8 arrays reload in seconds. The cache is
    # numeric arrays and names (no pickle), so a file planted in a shared data folder builds nothing.
    cache = data_dir / "celeba" / f"ugvae-{split}-{size}.npz"
    stored = None
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as arrays:
                stored = {k: arrays[k] for k in ("images", "attributes", "attribute_names")}
        except Exception:  # torn or foreign: decoded again and rewritten below
            stored = None
    if stored is not None:
        images, attributes = torch.from_numpy(stored["images"]), torch.from_numpy(stored["attributes"])
        names = [str(n) for n in stored["attribute_names"]]
        source = f"decoded CelebA cached in {cache}"
    else:
        source = f"CelebA files in {data_dir / 'celeba'}"
        images, attributes, names = decode(open_torchvision(split, data_dir, size, download))
        arrays = {"images": images.numpy(), "attributes": attributes.numpy(), "attribute_names": np.array(names)}
        try:
            if download:  # download=False writes nothing into the data folder
                atomic_write(str(cache), lambda f: np.savez(f, **arrays))
        except (OSError, ValueError):  # ValueError: DiskFull
            pass  # a read-only or full data folder only costs the next run the decoding time
    return ImageSet(images=images, attributes=attributes, attribute_names=names, name="celeba", source=source)


def open_torchvision(split: str, data_dir: Path, size: int, download: bool = True):
    import torchvision
    from torchvision import transforms

    transform = transforms.Compose([transforms.CenterCrop(CROP), transforms.Resize(size), transforms.PILToTensor()])
    kwargs = dict(root=str(data_dir), split=split, target_type="attr", transform=transform)
    try:
        return torchvision.datasets.CelebA(**kwargs)
    except Exception:  # torchvision says "not found or corrupted" with a RuntimeError; try downloading next
        pass
    try:
        if download:
            with quiet_network():
                return torchvision.datasets.CelebA(**kwargs, download=True)
    except Exception:
        pass
    celeba = data_dir / "celeba"
    tried = "could not be downloaded" if download else "downloading is off"
    raise DataError(
        f"CelebA is not in {celeba} and {tried}; place img_align_celeba/ and the "
        f"list_*.txt files from the CelebA site in {celeba}, or set `data_dir` to the folder holding celeba/"
    )


def decode(dataset) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from torch.utils.data import DataLoader

    first, _ = dataset[0]
    images = torch.empty((len(dataset), *first.shape), dtype=torch.uint8)
    loader = DataLoader(dataset, batch_size=512, num_workers=min(8, os.cpu_count() or 1))
    start = 0
    for batch, _ in progress(loader, desc="decoding CelebA", unit="batch"):
        images[start : start + len(batch)] = batch
        start += len(batch)
    attributes = dataset.attr.long()
    # Older torchvision versions keep an empty trailing header; keep one name per column.
    names = [n for n in dataset.attr_names if n][: attributes.shape[1]]
    return images, attributes, names
