"""The folder:PATH loader: recursion, resizing, labels from subfolders, the 90/10 split and its errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from ugvae.data import DataError, load_dataset


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
    with pytest.raises(DataError, match=r"cannot mix .* \(1x28x28\) with .* \(3x64x64\): pass --image-size 64"):
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
