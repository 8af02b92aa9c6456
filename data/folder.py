"""Folders of images: `folder:PATH` as a dataset, and a folder of image sets read as groups (ImageGroups).

Images are found recursively, turned upright as their EXIF orientation says, centre-cropped to
square and resized. As a dataset, first-level sub-folders become labels and a deterministic 90/10
split gives train and test. As groups (`folder_groups`, what `embed` and `sample` read), each
sub-folder is one group of any size, and a flat folder is cut into consecutive groups. Every
error about an image names its file. Reading is linear in the number of files and sets.

File and folder names need not be UTF-8 (a Latin-1 name arrives as surrogate escapes): files are
opened by their real names, and names that go into labels, outputs and messages are shown with
`files.printable_name` (the bytes that are not UTF-8 as \\xNN).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..errors import DataError
from ..files import printable_name, short_name
from ..progress import progress
from .imageset import ImageSet, empty_images, hashed_split

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
DEFAULT_SIZE = 64


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
        folders = sorted({f.parts[0] for f in files})
        label_of = {folder: label for label, folder in enumerate(folders)}
        labels = torch.tensor([label_of[f.parts[0]] for f in files], dtype=torch.long)
        class_names = [printable_name(folder) for folder in folders]

    images = read_images([root / f for f in files], image_size or DEFAULT_SIZE).images
    where = printable_name(str(root))
    return ImageSet(
        images=images, labels=labels, class_names=class_names, name=f"folder:{where}", source=f"image folder {where}"
    )


def list_images(root: Path) -> list[Path]:
    """Image files under `root`, searched recursively (not into linked folders), sorted, relative
    to `root`; a DataError if none, or if a folder under it cannot be listed.

    One scandir per folder: the kind of each entry comes with it, so only links cost a stat."""
    files, folders = [], [""]
    while folders:
        inside = folders.pop()
        try:
            with os.scandir(root / inside) as entries:
                for entry in entries:
                    name = os.path.join(inside, entry.name)
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(name)
                    # is_file: no FIFO, socket or dangling link that happens to be named like an image
                    elif os.path.splitext(entry.name)[1].lower() in EXTENSIONS and entry.is_file():
                        files.append(name)
        except OSError as e:
            raise DataError(
                f"folder {short_name(str(root / inside))} cannot be read ({e.strerror}); "
                "make it readable or move it out of the image folder"
            ) from None
    files = sorted(map(Path, files))
    if not files:
        raise DataError(f"image folder {root} holds no images; add {', '.join(sorted(EXTENSIONS))} files")
    return files


def split_files(files: list[Path], split: str, root: Path) -> list[Path]:
    """Deterministic 90/10 split by a hash of the path (`hashed_split`), so adding images moves few others."""
    # The name's bytes as stored (os.fsencode), so a name that is not UTF-8 hashes too.
    train, test = hashed_split([os.fsencode(f.as_posix()) for f in files])
    chosen = [files[i] for i in (test if split == "test" else train)]
    if not chosen:
        raise DataError(
            f"image folder {root} has only {len(files)} images, too few for a 10% test split; "
            "add images or use split 'train'"
        )
    return sorted(chosen)


# -- a folder of image sets as groups --------------------------------------------------------


@dataclass
class ImageGroups:
    """uint8 images (N, C, H, W) cut into groups: ``members[g]`` indexes the images of group g,
    ``sources[g]`` says where it came from (its folder, or an index range), and ``names`` and
    ``indices`` name each image (its file, or its dataset index; -1 for a file)."""

    images: torch.Tensor
    members: list[torch.Tensor]
    sources: list[str]  # per group: its folder, or its index range in the dataset
    names: list[str]  # per image
    indices: list[int]  # per image: its dataset index, -1 for files
    notice: str | None = None


def consecutive(n: int, group_size: int) -> list[torch.Tensor]:
    """The indices 0..n-1 cut in order into groups of `group_size`; the last group holds the rest.

    Parameters
    ----------
    n : int
        How many images.
    group_size : int
        Images per group, at least 1.

    Returns
    -------
    list of torch.Tensor
        One tensor of indices per group.
    """
    if not isinstance(group_size, int) or group_size < 1:
        raise DataError(f"`group_size` must be >= 1, got {group_size}")
    return list(torch.arange(n).split(group_size))


def folder_groups(
    root: str | Path, x_shape: tuple[int, int, int], group_size: int | None = None, field: str = "folder"
) -> ImageGroups:
    """The images of a folder as groups, centre-cropped and resized to `x_shape`.

    Parameters
    ----------
    root : str or Path
        A folder: one group per sub-folder holding images (of any number), or a flat folder of
        images. Hidden files and non-images are skipped and counted in ``notice``.
    x_shape : tuple of int
        (C, H, W) of the run's images.
    group_size : int, optional
        For a flat folder: consecutive groups of this many. Default: all its images in one group.
    field : str, default "folder"
        The setting that named the folder, for the messages.

    Returns
    -------
    ImageGroups

    Raises
    ------
    DataError
        A folder that does not exist, holds no image, or an image that cannot be read.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder of images" if root.exists() else "does not exist"
        raise DataError(f"image folder {root} {what}; check `{field}`")
    channels, height, width = x_shape
    if height != width:
        raise DataError(f"images of {height}x{width} are not square; folders can only be read at a square size")
    files = list_images(root)
    nested = [f for f in files if len(f.parts) > 1]
    if nested and len(nested) != len(files):
        loose = [f.as_posix() for f in files if len(f.parts) == 1][:3]
        raise DataError(
            f"{root} holds both sub-folders of images and loose images ({', '.join(loose)}); "
            "put every image in a sub-folder (one group each) or use a flat folder"
        )
    if nested:
        # Each first-level sub-folder is one group, with every image below it (one pass over the files).
        by_folder: dict[str, list[Path]] = {}
        for f in files:
            by_folder.setdefault(f.parts[0], []).append(f)
        folders = sorted(by_folder)
        files = [f for folder in folders for f in by_folder[folder]]
        ends = np.cumsum([len(by_folder[folder]) for folder in folders]).tolist()
        members = [torch.arange(end - len(by_folder[folder]), end) for folder, end in zip(folders, ends)]
        sources = [printable_name(folder) for folder in folders]
    else:
        members = consecutive(len(files), group_size or len(files))
        sources = [f"{printable_name(root.name)}[{int(m[0])}:{int(m[-1]) + 1}]" for m in members]
    read = read_images([root / f for f in files], height, channels)
    notices = [resize_notice(read.other_sizes, height), gray_notice(read.made_gray, len(files))]
    notice = "; ".join(n for n in notices if n)
    return ImageGroups(
        read.images,
        members,
        sources,
        [printable_name(f.as_posix()) for f in files],
        [-1] * len(files),
        f"notice: {notice}" if notice else None,
    )


def resize_notice(sizes: list[tuple[int, int]], size: int) -> str | None:
    """What happened to images of other sizes than size x size, or None when there were none."""
    if not sizes:
        return None
    shown = ", ".join(f"{w}x{h}" for w, h in sizes[:3]) + (", ..." if len(sizes) > 3 else "")
    return f"images of size {shown} were centre-cropped and resized to {size}x{size}"


def gray_notice(made_gray: int, total: int) -> str | None:
    if not made_gray:
        return None
    return f"{made_gray} of {total} images are in colour and were converted to grayscale (one channel)"


# -- reading image files ---------------------------------------------------------------------


class FolderImages(NamedTuple):
    images: torch.Tensor  # uint8 (N, C, size, size)
    made_gray: int  # colour images read into one channel: their colour is lost
    other_sizes: list[tuple[int, int]]  # sorted (width, height) of images that were not size x size


def read_images(paths: list[Path], size: int, channels: int | None = None) -> FolderImages:
    """uint8 (N, C, size, size): centre-cropped and resized; C is `channels` (1 or 3) if given,
    else 1 when every image is grayscale and 3 otherwise."""
    from PIL import Image

    # Opening reads only the header, so every mode and size is known before any image is decoded.
    headers = []
    for path in paths:
        with open_image(path) as image:
            headers.append((image.mode, upright_size(image)))
    gray = all(mode in GRAY_MODES for mode, _ in headers) if channels is None else channels == 1
    channels = 1 if gray else 3
    # One image is decoded at a time: the largest one, and three copies of its resized pixels, set the peak.
    workspace = max((decode_workspace(mode, w, h) for mode, (w, h) in headers), default=0) + 3 * channels * size * size
    where = f"image folder {printable_name(str(paths[0].parent))}" if paths else "no images"
    out = empty_images(len(paths), (channels, size, size), where, workspace)
    for i, path in enumerate(progress(paths, desc="reading images", unit="image")):
        with open_image(path) as image:
            try:
                pixels = square(eight_bit(upright(image)).convert("L" if gray else "RGB"))
                pixels = pixels.resize((size, size), Image.Resampling.BICUBIC)
            except Exception as err:  # PIL raises many types for broken files (OSError, ValueError, SyntaxError...)
                raise DataError(
                    f"image {printable_name(str(path))} cannot be decoded ({err}); delete or replace the file"
                ) from None
        array = np.asarray(pixels, dtype=np.uint8)
        out[i] = torch.from_numpy(array.reshape(size, size, channels).copy()).permute(2, 0, 1)
    made_gray = sum(mode not in GRAY_MODES for mode, _ in headers) if gray else 0
    other_sizes = sorted({s for _, s in headers if s != (size, size)})
    return FolderImages(out, made_gray, other_sizes)


def open_image(path: Path):
    """PIL's image of `path`, header read; every failure is a DataError naming the file."""
    from PIL import Image

    try:
        return Image.open(path)
    except Image.DecompressionBombError as err:
        # PIL's limit (Image.MAX_IMAGE_PIXELS) against files that decode to gigabytes.
        raise DataError(
            f"image {printable_name(str(path))} is too large to decode safely ({err}); shrink or remove it"
        ) from None
    except Exception as err:  # unreadable, not an image, or text chunks past PIL's limits (ValueError)
        why = f"{type(err).__name__}: {err}"
        raise DataError(
            f"image {printable_name(str(path))} cannot be read ({why}); delete or replace the file"
        ) from None


# EXIF orientations 5 to 8 store the picture turned a quarter: its upright width is the stored height.
QUARTER_TURNS = {5, 6, 7, 8}


def orientation(image) -> int:
    """The EXIF orientation of `image` (1: stored upright), 1 when it has none or an unreadable one.

    Only EXIF read already counts: asking PIL for more would decode a PNG, whose EXIF may follow
    its pixels (`upright` loads the image first, so it sees that too)."""
    from PIL import ExifTags

    if "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a damaged EXIF block: the pixels may still be fine
        return 1
    return value if value in range(1, 9) else 1


def upright_size(image) -> tuple[int, int]:
    """(width, height) of `image` once turned upright."""
    width, height = image.size
    return (height, width) if orientation(image) in QUARTER_TURNS else (width, height)


def upright(image):
    """`image`, decoded, turned as its EXIF orientation says (cameras store a portrait photo on its side)."""
    image.load()
    if orientation(image) == 1:
        return image
    from PIL import ImageOps

    return ImageOps.exif_transpose(image)


def decode_workspace(mode: str, width: int, height: int) -> int:
    """Bytes that decoding one image of `mode` holds at its peak: the decoded pixels (up to 4 bytes each),
    a converted and a cropped copy, and for 16-bit and float modes the float64 rescaling of eight_bit."""
    rescaled = 17 if mode.startswith("I") or mode == "F" else 0
    return width * height * (4 + 4 + 4 + rescaled)


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
