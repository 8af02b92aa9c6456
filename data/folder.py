"""Any folder of images (searched recursively), centre-cropped to square and resized; subfolders become
labels. Also a folder of image sets read as groups (`folder_groups`): each sub-folder one group."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .imageset import ImageSet, empty_images

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
DEFAULT_SIZE = 64
TEST_FRACTION = 0.1


def load(split: str, data_dir: Path, image_size: int | None, option: str | None = None) -> ImageSet:
    if not option:
        raise DataError("dataset 'folder' needs a path; write it as folder:PATH")
    root = Path(option).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; check the path after 'folder:'")
    files = list_images(root)
    files = split_files(files, split, root)

    # Labels only when every image sits in a first-level subfolder; a mix would leave some unlabelled.
    labels, class_names = None, []
    if all(len(f.parts) > 1 for f in files):
        class_names = sorted({f.parts[0] for f in files})
        labels = torch.tensor([class_names.index(f.parts[0]) for f in files], dtype=torch.long)

    images = read_images([root / f for f in files], image_size or DEFAULT_SIZE)
    return ImageSet(images=images, labels=labels, class_names=class_names, name=f"folder:{root}")


def list_images(root: Path) -> list[Path]:
    """Image files under `root`, searched recursively, sorted, relative to `root`; a DataError if none."""
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"image folder {root} holds no images; add {', '.join(sorted(EXTENSIONS))} files")
    return files


def split_files(files: list[Path], split: str, root: Path) -> list[Path]:
    """Deterministic 90/10 split: sort by a hash of the path, so adding images moves few others."""
    ranked = sorted(files, key=lambda f: hashlib.sha1(f.as_posix().encode()).hexdigest())
    n_test = int(len(files) * TEST_FRACTION)
    chosen = ranked[len(files) - n_test :] if split == "test" else ranked[: len(files) - n_test]
    if not chosen:
        raise DataError(
            f"image folder {root} has only {len(files)} images, too few for a 10% test split; "
            "add images or use split 'train'"
        )
    return sorted(chosen)


def read_images(paths: list[Path], size: int, channels: int | None = None) -> torch.Tensor:
    """uint8 (N, C, size, size): centre-cropped and resized; C is `channels` (1 or 3) if given,
    else 1 when every image is grayscale and 3 otherwise."""
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm

    def open_image(path):
        try:
            return Image.open(path)
        except Image.DecompressionBombError as err:
            # PIL's limit (Image.MAX_IMAGE_PIXELS) against files that decode to gigabytes.
            raise DataError(f"image {path} is too large to decode safely ({err}); shrink or remove it") from None
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"image {path} cannot be read ({type(err).__name__}); delete or replace the file") from None

    # Opening reads only the header, so every mode is known before any image is decoded.
    modes = []
    for path in paths:
        with open_image(path) as image:
            modes.append(image.mode)
    gray = all(mode in GRAY_MODES for mode in modes) if channels is None else channels == 1
    channels = 1 if gray else 3
    out = empty_images(len(paths), (channels, size, size), f"image folder {paths[0].parent}")
    for i, path in enumerate(tqdm(paths, desc="reading images", disable=None, leave=False)):
        with open_image(path) as image:
            try:
                pixels = square(eight_bit(image).convert("L" if gray else "RGB"))
                pixels = pixels.resize((size, size), Image.Resampling.BICUBIC)
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                raise DataError(f"image {path} cannot be decoded ({err}); delete or replace the file") from None
        array = np.asarray(pixels, dtype=np.uint8)
        out[i] = torch.from_numpy(array.reshape(size, size, channels).copy()).permute(2, 0, 1)
    return out


def eight_bit(image):
    """A 16-bit grayscale PNG opens as I;16 (B/L: byte order) or I, which convert("L") clips at
    255 instead of rescaling; float images (F) are taken as [0, 1] or [0, 255] by their range."""
    if not (image.mode.startswith("I") or image.mode == "F"):
        return image
    from PIL import Image

    pixels = np.asarray(image).astype(np.float64)
    top = pixels.max(initial=0.0)
    if image.mode == "F":
        scale = 255.0 if top <= 1.0 else 1.0
    elif image.mode.startswith("I;16"):
        scale = 1.0 / 256
    else:  # I: 32-bit, holding a 16-bit image's values or 8-bit ones
        scale = 1.0 / 256 if top > 255 else 1.0
    return Image.fromarray(np.clip(np.nan_to_num(pixels * scale), 0, 255).astype(np.uint8))


def square(image):
    """Centre crop to a square so resizing never stretches faces or objects."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


# -- a folder of image sets, as groups (embed, sample from a set) ---------------------------
@dataclass
class ImageGroups:
    """uint8 images (N, C, H, W) cut into groups: `members[g]` indexes the images of group g."""

    images: torch.Tensor
    members: list[torch.Tensor]
    sources: list[str]  # per group: its folder, or its index range in the dataset
    names: list[str]  # per image
    indices: list[int]  # per image: its dataset index, -1 for files
    notice: str | None = None


def consecutive(n: int, group_size: int) -> list[torch.Tensor]:
    """0..n-1 cut in order into groups of group_size; the last one holds the rest."""
    if group_size < 1:
        raise DataError(f"`group_size` must be >= 1, got {group_size}")
    return list(torch.arange(n).split(group_size))


def folder_groups(root: str | Path, x_shape: tuple[int, int, int], group_size: int | None = None) -> ImageGroups:
    """Images of a folder as groups: one per sub-folder holding images, or, for a flat folder,
    consecutive groups of `group_size` (all of them in one group when it is None)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; check the `folder` path")
    channels, height, width = x_shape
    if height != width:
        raise DataError(f"the model's images are {height}x{width}; folders can only be read for square images")
    files = list_images(root)
    nested = [f for f in files if len(f.parts) > 1]
    if nested and len(nested) != len(files):
        loose = [f.as_posix() for f in files if len(f.parts) == 1][:3]
        raise DataError(
            f"{root} holds both sub-folders of images and loose images ({', '.join(loose)}); "
            "put every image in a sub-folder (one group each) or use a flat folder"
        )
    if nested:
        # Each first-level sub-folder is one group, with every image below it.
        sources = sorted({f.parts[0] for f in files})
        members, start = [], 0
        for source in sources:
            size = sum(1 for f in files if f.parts[0] == source)
            members.append(torch.arange(start, start + size))
            start += size
        files = [f for source in sources for f in files if f.parts[0] == source]
    else:
        members = consecutive(len(files), group_size or len(files))
        sources = [f"{root.name}[{int(m[0])}:{int(m[-1]) + 1}]" for m in members]
    paths = [root / f for f in files]
    images = read_images(paths, height, channels)
    return ImageGroups(
        images, members, sources, [f.as_posix() for f in files], [-1] * len(files), resize_notice(paths, height)
    )


def resize_notice(paths: list[Path], size: int) -> str | None:
    from PIL import Image

    sizes = set()
    for path in paths:
        with Image.open(path) as image:
            sizes.add(image.size)
    other = sorted(s for s in sizes if s != (size, size))
    if not other:
        return None
    shown = ", ".join(f"{w}x{h}" for w, h in other[:3]) + (", ..." if len(other) > 3 else "")
    return f"notice: images of size {shown} were centre-cropped and resized to the run's {size}x{size}"
