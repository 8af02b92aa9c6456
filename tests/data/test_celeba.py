"""CelebA without the real files: the offline error, and decoding plus caching with a stand-in dataset."""

import pytest
import torch

from ugvae.data import DataError, celeba, load_dataset


def test_missing_celeba_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError, match="celeba") as err:
        load_dataset("celeba", data_dir=str(tmp_path))
    assert "\n" not in str(err.value)


class FakeCelebA(torch.utils.data.Dataset):
    attr_names = ["Smiling", "Male", ""]

    def __init__(self):
        self.attr = (torch.arange(12).view(6, 2) % 3 == 0).long()

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return torch.full((3, 8, 8), i, dtype=torch.uint8), self.attr[i]


def test_decode_keeps_attributes_and_caches(tmp_path, monkeypatch):
    (tmp_path / "celeba").mkdir()
    monkeypatch.setattr(celeba, "open_torchvision", lambda split, root, size, download: FakeCelebA())
    ds = load_dataset("celeba", data_dir=str(tmp_path), image_size=8)
    assert ds.x_shape == (3, 8, 8) and ds.attribute_names == ["Smiling", "Male"] and ds.labels is None
    assert ds.images[:, 0, 0, 0].tolist() == list(range(6)) and ds.attributes.shape == (6, 2)
    monkeypatch.setattr(celeba, "open_torchvision", lambda *args: pytest.fail("the cache was not used"))
    assert torch.equal(load_dataset("celeba", data_dir=str(tmp_path), image_size=8).images, ds.images)
