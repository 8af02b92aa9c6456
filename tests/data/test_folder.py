"""data/folder.py: the folder:PATH loader (recursion, resizing, labels from subfolders, the 90/10 split),
folders of image sets as groups, and errors that name the file."""

import numpy as np
import pytest
import torch
from PIL import Image

from ugvae.data import DataError, folder_groups, imageset, load_dataset


def write_images(folder, count, brightness, size=(20, 20), mode="L"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(brightness)
    for i in range(count):
        pixels = np.clip(brightness + rng.integers(-10, 10, size=(size[1], size[0], 3 if mode == "RGB" else 1)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8).squeeze(), mode=mode).save(folder / f"img{i:03d}.png")


@pytest.fixture
def two_domains(tmp_path):
    write_images(tmp_path / "dark", 10, 40)
    write_images(tmp_path / "bright", 10, 210, size=(30, 24))  # other size and not square
    return tmp_path


def test_subfolders_become_labels_and_every_image_is_resized(two_domains):
    train = load_dataset(f"folder:{two_domains}", image_size=16)
    test = load_dataset(f"folder:{two_domains}", split="test", image_size=16)
    assert (len(train), len(test)) == (18, 2)
    assert train.x_shape == (1, 16, 16)  # all grayscale, so one channel
    assert train.class_names == ["bright", "dark"]
    bright = train.images[train.labels == 0].float().mean()
    dark = train.images[train.labels == 1].float().mean()
    assert bright > 150 > 100 > dark
    assert load_dataset(f"folder:{two_domains}").x_shape == (1, 64, 64)  # default size


def test_flat_folder_has_no_labels_and_rgb_wins(tmp_path):
    write_images(tmp_path, 12, 100)
    write_images(tmp_path / "more", 0, 0)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "red.jpg")
    ds = load_dataset(f"folder:{tmp_path}", image_size=8)
    assert ds.labels is None and ds.x_shape == (3, 8, 8) and len(ds) == 12


def test_split_is_deterministic(two_domains):
    a = load_dataset(f"folder:{two_domains}", split="test", image_size=8)
    b = load_dataset(f"folder:{two_domains}", split="test", image_size=8)
    assert a.images.equal(b.images)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")


def test_corrupt_image_is_named(tmp_path):
    write_images(tmp_path, 3, 100)
    (tmp_path / "x.png").write_bytes(b"\x89PNG garbage bytes")
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{tmp_path}")
    assert "x.png" in str(err.value) and "\n" not in str(err.value)


def test_mixing_folders_of_different_shapes(tmp_path):
    write_images(tmp_path / "a", 10, 40)
    write_images(tmp_path / "b", 10, 200, mode="RGB")
    with pytest.raises(DataError, match=r"cannot mix .* \(1x28x28\) with .* \(3x64x64\): set `image_size` to 64"):
        load_dataset(f"synthetic:20+folder:{tmp_path / 'b'}")
    mixed = load_dataset(f"folder:{tmp_path / 'a'}+folder:{tmp_path / 'b'}", image_size=12)
    assert mixed.x_shape == (3, 12, 12) and mixed.domains.tolist() == [0] * 9 + [1] * 9
    assert mixed.images[mixed.domains == 0].float().mean() < mixed.images[mixed.domains == 1].float().mean()


def test_an_image_past_the_decompression_limit_is_named(tmp_path, monkeypatch):
    for i in range(10):
        Image.new("L", (8, 8), color=10 * i).save(tmp_path / f"{i}.png")
    Image.new("L", (64, 64)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 is past twice the limit
    with pytest.raises(DataError, match="bomb.png is too large to decode safely.*shrink or remove it"):
        load_dataset(f"folder:{tmp_path}", "train", None, 8)


@pytest.mark.parametrize("mode", ["P", "CMYK", "LA", "RGBA", "1"])
def test_odd_channel_modes_decode_to_eight_bit_pixels(tmp_path, mode):
    ramp = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (16, 1))
    for i in range(10):
        image = Image.fromarray(np.stack([ramp] * 3, -1)).convert(mode)
        image.save(tmp_path / f"{i}.{'jpg' if mode == 'CMYK' else 'png'}")
    data = load_dataset(f"folder:{tmp_path}", "train", None, 16)
    assert data.images.dtype == torch.uint8 and int(data.images.max()) >= 240


def png_with_text_bomb(path, after_pixels=False):
    """A valid 4x4 PNG plus a zTXt chunk that inflates past PIL's limit on text (MAX_TEXT_CHUNK)."""
    import io
    import struct
    import zlib

    from PIL import PngImagePlugin

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    buffer = io.BytesIO()
    Image.new("L", (4, 4), 7).save(buffer, "PNG")
    png = buffer.getvalue()
    bomb = chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"a" * (PngImagePlugin.MAX_TEXT_CHUNK + 1)))
    at = png.index(b"IEND") - 4 if after_pixels else 33  # before IEND, or right after the 8+25 bytes of IHDR
    path.write_bytes(png[:at] + bomb + png[at:])


@pytest.mark.parametrize("after_pixels", [False, True])
def test_a_png_text_chunk_bomb_is_named(tmp_path, after_pixels):
    write_images(tmp_path, 10, 100)
    png_with_text_bomb(tmp_path / "talkative.png", after_pixels)
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{tmp_path}", image_size=8)
    message = str(err.value)
    assert "talkative.png" in message and "delete or replace" in message and "\n" not in message


def test_colour_images_read_as_grayscale_groups_say_how_many(tmp_path):
    write_images(tmp_path / "a", 3, 100)
    write_images(tmp_path / "b", 2, 100, mode="RGB", size=(12, 8))
    groups = folder_groups(tmp_path, (1, 8, 8))
    assert groups.images.shape == (5, 1, 8, 8) and [len(m) for m in groups.members] == [3, 2]
    assert "2 of 5 images are in colour and were converted to grayscale" in groups.notice
    assert "images of size 12x8, 20x20 were centre-cropped and resized to 8x8" in groups.notice
    assert folder_groups(tmp_path / "a", (3, 20, 20)).notice is None  # gray made RGB loses nothing
    with pytest.raises(DataError, match="`folder`"):
        folder_groups(tmp_path / "nope", (1, 8, 8))
    with pytest.raises(DataError, match="`group_size` must be >= 1"):
        folder_groups(tmp_path / "a", (1, 8, 8), group_size=-1)


def test_decoding_a_large_image_is_counted_before_reading(tmp_path, monkeypatch):
    write_images(tmp_path, 9, 100)
    Image.new("L", (2000, 2000)).save(tmp_path / "large.png")  # 4 MB of pixels, a few kB on disk
    monkeypatch.setattr(imageset, "available_memory", lambda: 20 * 2**20)  # the 8x8 output would fit
    with pytest.raises(DataError, match="GiB of memory are free; use fewer images or a smaller `image_size`"):
        load_dataset(f"folder:{tmp_path}", image_size=8)
    monkeypatch.setattr(imageset, "available_memory", lambda: 60 * 2**20)
    assert load_dataset(f"folder:{tmp_path}", image_size=8).x_shape == (1, 8, 8)


def test_a_folder_path_may_hold_a_plus(tmp_path):
    write_images(tmp_path / "x+y", 10, 100)
    write_images(tmp_path / "z", 10, 200)
    assert len(load_dataset(f"folder:{tmp_path / 'x+y'}", image_size=8)) == 9
    mixed = load_dataset(f"folder:{tmp_path / 'x+y'}+folder:{tmp_path / 'z'}", image_size=8)
    assert mixed.domains.bincount().tolist() == [9, 9]
