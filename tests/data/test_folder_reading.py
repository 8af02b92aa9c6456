"""data/folder.py at scale and with camera files: reading many sets is linear in the number of
sets (issue 29, D12), and EXIF orientation is applied (issue 29, L: `exif_transpose`)."""

import os
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from ugvae.data import folder, folder_groups, load_dataset


def calls_to_read(tmp_path, sets: int, how) -> int:
    """Python and C calls made by `how(root)` on a folder of `sets` sets of one (empty) image
    each; decoding is left out (read_images is replaced), so what is counted is the bookkeeping
    that groups the files, the part that was quadratic."""
    root = tmp_path / f"sets-{sets}"
    for s in range(sets):
        (root / f"set{s:05d}").mkdir(parents=True)
        (root / f"set{s:05d}" / "a.png").touch()
    events = Counter()

    def count(frame, event, arg):
        events[event] += 1

    sys.setprofile(count)
    try:
        how(root)
    finally:
        sys.setprofile(None)
    return events["call"] + events["c_call"]


def no_decoding(paths, size, channels=None):
    return folder.FolderImages(torch.zeros(len(paths), channels or 1, size, size, dtype=torch.uint8), 0, [])


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(lambda root: folder_groups(root, (1, 8, 8)), id="as groups"),
        pytest.param(lambda root: load_dataset(f"folder:{root}", image_size=8), id="as a labelled dataset"),
    ],
)
def test_reading_many_sets_is_linear_in_the_number_of_sets(tmp_path, monkeypatch, how):
    """D12: on 72f652f every set scanned every file as groups (20,000 sets: 142 s; 1000 -> 3000
    sets: 8.5 times the calls); now three times the sets is about three times the calls. (The
    labelled dataset's quadratic lookup was one C call, list.index, which this count cannot see:
    that case guards against a Python-level one.)"""
    monkeypatch.setattr(folder, "read_images", no_decoding)
    small, large = calls_to_read(tmp_path, 1000, how), calls_to_read(tmp_path, 3000, how)
    assert large / small < 3.6, (small, large)  # linear: about 3; quadratic: about 9


def camera_image(path, orientation: int):
    """An 8x8 image stored with its white half on the left, and the EXIF orientation `orientation`."""
    pixels = np.zeros((8, 8), dtype=np.uint8)
    pixels[:, :4] = 255
    image = Image.fromarray(pixels, mode="L")
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize(
    "orientation, white_side",
    [(1, "left"), (2, "right"), (3, "right"), (6, "top"), (8, "bottom")],
)
def test_exif_orientation_is_applied(tmp_path, suffix, orientation, white_side):
    """On 72f652f every photo was read as stored: a phone's portrait photo came out on its side."""
    camera_image(tmp_path / f"photo{suffix}", orientation)
    pixels = folder_groups(tmp_path, (1, 8, 8)).images[0, 0].float()
    sides = {
        "left": pixels[:, :4].mean(),
        "right": pixels[:, 4:].mean(),
        "top": pixels[:4].mean(),
        "bottom": pixels[4:].mean(),
    }
    assert max(sides, key=sides.get) == white_side
    assert sides[white_side] > 200


def test_a_portrait_photo_counts_at_its_upright_size(tmp_path):
    """Sizes in the resize notice are upright: a 6x10 stored photo turned a quarter is 10 wide."""
    image = Image.new("L", (6, 10), 128)
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "portrait.jpg", exif=exif)
    assert "10x6" in folder_groups(tmp_path, (1, 8, 8)).notice


def test_a_damaged_exif_block_is_read_as_stored(tmp_path):
    """An EXIF block PIL cannot parse leaves the pixels readable, unturned."""
    camera_image(tmp_path / "photo.jpg", 1)
    data = (tmp_path / "photo.jpg").read_bytes()
    start = data.index(b"Exif\0\0") + 6
    damaged = data[:start] + b"\xff" * 8 + data[start + 8 :]  # the TIFF header of the EXIF block
    (tmp_path / "photo.jpg").write_bytes(damaged)
    pixels = folder_groups(tmp_path, (1, 8, 8)).images[0, 0].float()
    assert pixels[:, :4].mean() > pixels[:, 4:].mean()


def test_a_folder_nested_past_path_max_is_one_data_error(tmp_path):
    """Fourth hostile pass: sub-folders nested past PATH_MAX (made relative to a descriptor) were
    an OSError ENAMETOOLONG traceback from the listing; now one DataError naming the folder."""
    from ugvae.data import DataError

    (tmp_path / "s").mkdir()
    camera_image(tmp_path / "s" / "a.png", 1)
    fd = os.open(tmp_path / "s", os.O_RDONLY)
    for _ in range(25):  # 25 x 200 bytes: past PATH_MAX (4096)
        os.mkdir("d" * 200, dir_fd=fd)
        fd, parent = os.open("d" * 200, os.O_RDONLY, dir_fd=fd), fd
        os.close(parent)
    os.close(fd)
    with pytest.raises(DataError, match=r"folder .*/s/dddd.* cannot be read \(File name too long\)"):
        folder_groups(tmp_path, (1, 8, 8))
