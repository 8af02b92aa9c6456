"""The registry, the ImageSet contract, resizing and the mixing of two datasets."""

import pytest
import torch

from ugvae.data import DATASETS, DataError, ImageSet, load_dataset
from ugvae.data.fashion_mnist import DEBIAN_DIR


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
    expected = r"cannot mix digits \(1x8x8\) with synthetic \(1x28x28\): pass --image-size 28"
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
