"""Fashion-MNIST from Debian's dataset-fashion-mnist, and the IDX reader's refusal of corrupt files."""

import gzip

import numpy as np
import pytest

from tests.helpers import write_idx
from ugvae.data import DataError, load_dataset
from ugvae.data.fashion_mnist import DEBIAN_DIR


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_debian_folder_gives_the_full_set(tmp_path):
    train = load_dataset("fashion-mnist", data_dir=str(tmp_path))
    test = load_dataset("fashion-mnist", split="test", data_dir=str(tmp_path))
    assert (len(train), len(test)) == (60000, 10000)
    assert train.x_shape == (1, 28, 28) and train.class_names[9] == "Ankle boot"
    assert train.labels.bincount().tolist() == [6000] * 10


def corrupt_folder(tmp_path, images_bytes):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(4))
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(images_bytes)
    return folder / "t10k-images-idx3-ubyte.gz"


@pytest.mark.parametrize(
    "images_bytes",
    [
        b"this is not gzip at all",
        gzip.compress(bytes([0, 0, 0x0D, 3]) + bytes(12)),  # float dtype code: wrong magic
        gzip.compress(bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (4, 28, 28)) + bytes(9)),  # short
    ],
)
def test_corrupt_idx_file_names_the_file(tmp_path, images_bytes):
    path = corrupt_folder(tmp_path, images_bytes)
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", split="test", data_dir=str(tmp_path))
    assert str(path) in str(err.value) and "delete it" in str(err.value) and "\n" not in str(err.value)
