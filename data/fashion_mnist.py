"""Fashion-MNIST: IDX files in the data folder, else Debian's dataset-fashion-mnist, else a torchvision download."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .download import download_mnist_like
from .idx import find_idx_pair, load_idx_pair
from .imageset import ImageSet

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def load(split: str, data_dir: Path, image_size: int | None, download: bool = True) -> ImageSet:
    local = [data_dir / "FashionMNIST" / "raw", data_dir / "fashion-mnist", data_dir]
    found = find_idx_pair(local, split)
    fix = "delete it so Fashion-MNIST is downloaded again"
    if found is None:
        found = find_idx_pair([DEBIAN_DIR], split)
        fix = "reinstall it with apt-get install --reinstall dataset-fashion-mnist"
    if found is not None:
        images, labels = load_idx_pair(*found, fix=fix)
        where = "Debian's dataset-fashion-mnist" if found[0].parent == DEBIAN_DIR else "IDX files"
        source = f"{where} in {found[0].parent}"
        return ImageSet(images=images, labels=labels, class_names=CLASS_NAMES, name="fashion-mnist", source=source)
    downloaded = None
    if download:
        import torchvision

        downloaded = download_mnist_like(torchvision.datasets.FashionMNIST, data_dir, train=split == "train")
    if downloaded is None:
        tried = "could not be downloaded" if download else "downloading is off"
        raise DataError(
            f"Fashion-MNIST is neither in {data_dir} nor in {DEBIAN_DIR} and {tried}; "
            "run apt-get install dataset-fashion-mnist, or download it with network access"
        )
    images, labels = downloaded
    source = f"downloaded by torchvision into {data_dir}"
    return ImageSet(images=images, labels=labels, class_names=CLASS_NAMES, name="fashion-mnist", source=source)
