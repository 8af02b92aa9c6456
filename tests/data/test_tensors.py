"""In-memory tensors as data (data/tensors.py): checked field by field in one line each,
quantised like every dataset, named by their contents, a tenth held out by a hash."""

import numpy as np
import pytest
import torch

from ugvae.data import DataError, ImageTensors, check_dataset_name, load_dataset, tensor_data
from ugvae.data.imageset import hashed_split

N = 50


@pytest.fixture
def pixels():
    return torch.rand(N, 1, 6, 6, generator=torch.Generator().manual_seed(0))


def one_line(call) -> str:
    with pytest.raises(DataError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "train, test, named, says",
    [
        ([[0.5]], None, "`train_data`", "torch tensor or a numpy array"),
        (np.array([["a"]]), None, "`train_data`", "numpy array of <U1"),
        (torch.rand(N, 6, 6), None, "`train_data`", "x.unsqueeze(1)"),
        (torch.rand(N, 6, 6, 3), None, "`train_data`", "x.permute(0, 3, 1, 2)"),
        (torch.rand(0, 1, 6, 6), None, "`train_data`", "holds no image"),
        (torch.zeros(N, 1, 6, 6, dtype=torch.complex64), None, "`train_data`", "complex"),
        (torch.rand(N, 1, 6, 6).index_fill(0, torch.tensor([7]), float("nan")), None, "`train_data`", "image 7"),
        (torch.rand(N, 1, 6, 6) * 255, None, "`train_data`", "divide pixels of 0..255 by 255"),
        (torch.full((N, 1, 6, 6), 256), None, "`train_data`", "0..255 (uint8)"),
        (torch.randint(0, 2, (N, 1, 6, 6)), None, "`train_data`", "x.float()"),
        (ImageTensors(torch.rand(N, 1, 6, 6), labels=torch.zeros(N, 1)), None, "labels of `train_data`", "(50,)"),
        (ImageTensors(torch.rand(N, 1, 6, 6), labels=-torch.ones(N)), None, "labels of `train_data`", "from 0"),
        (ImageTensors(torch.rand(N, 1, 6, 6), labels=torch.full((N,), 0.5)), None, "labels of `train_data`", "whole"),
        (ImageTensors(torch.rand(N, 1, 6, 6), groups=torch.zeros(3)), None, "groups of `train_data`", "(50,)"),
        (torch.rand(N, 1, 6, 6), torch.rand(9, 1, 5, 5), "`test_data`", "one shape"),
        (torch.rand(N, 1, 6, 6), torch.rand(9, 6, 6), "`test_data`", "x.unsqueeze(1)"),
        (torch.rand(5, 1, 6, 6), None, "`train_data`", "pass `test_data`"),
    ],
)
def test_tensors_that_cannot_be_images_are_one_line_naming_the_field(train, test, named, says):
    message = one_line(lambda: tensor_data(train, test))
    assert named in message and says in message


def test_pixels_are_quantised_like_every_dataset_and_the_name_follows_the_contents(pixels):
    before = pixels.clone()
    as_floats = tensor_data(pixels, pixels[:10])
    as_bytes = tensor_data((pixels * 255).round().to(torch.uint8).numpy(), (pixels[:10] * 255).round().byte())
    assert torch.equal(pixels, before)  # the caller's tensor is never written
    assert as_floats.train.images.dtype == torch.uint8 and as_floats.train.x_shape == (1, 6, 6)
    assert torch.equal(as_floats.train.images, as_bytes.train.images)
    assert as_floats.name == as_bytes.name and as_floats.name.startswith("tensors:") and len(as_floats.name) == 20
    check_dataset_name(as_floats.name)  # config.json's `dataset` passes the setting's rule
    labelled = tensor_data(ImageTensors(pixels, labels=torch.arange(N) % 5), pixels[:10])
    assert labelled.name != as_floats.name and labelled.train.class_names == ["0", "1", "2", "3", "4"]
    changed = pixels.clone()
    changed[3, 0, 0, 0] = 1 - changed[3, 0, 0, 0]
    assert tensor_data(changed, pixels[:10]).name != as_floats.name
    read_only = (pixels * 255).round().byte().numpy()
    read_only.flags.writeable = False
    assert tensor_data(read_only, pixels[:10]).name == as_floats.name
    binary = tensor_data(pixels > 0.5, pixels[:10])  # bool images are 0 and 255
    assert set(binary.train.images.unique().tolist()) == {0, 255}


def test_without_test_data_a_tenth_is_held_out_the_same_way_every_time(pixels):
    data = tensor_data(ImageTensors(pixels, labels=torch.arange(N) % 5))
    assert data.held_out and (len(data.train), len(data.test)) == (45, 5)
    # Every image on exactly one side, with its label.
    flat = [tuple(img.flatten().tolist()) for img in (pixels * 255).round().byte()]
    sides = [tuple(img.flatten().tolist()) for s in (data.train, data.test) for img in s.images]
    assert sorted(sides) == sorted(flat)
    where = {img: i for i, img in enumerate(flat)}
    assert [where[tuple(img.flatten().tolist())] % 5 for img in data.test.images] == data.test.labels.tolist()
    again = tensor_data(ImageTensors(pixels, labels=torch.arange(N) % 5))
    assert torch.equal(again.test.images, data.test.images) and again.name == data.name
    assert data.name != tensor_data(ImageTensors(pixels, labels=torch.arange(N) % 5), data.test.images).name


def test_held_out_groups_stay_whole(pixels):
    groups = torch.arange(N) // 5  # ten groups of five
    data = tensor_data(ImageTensors(pixels, groups=groups))
    assert len(data.test) == 5 and data.test.groups.unique().numel() == 1
    assert int(data.test.groups[0]) not in data.train.groups.tolist()


def test_copies_of_an_image_never_straddle_the_split():
    keys = [bytes([i]) for i in range(19)] + [b"copy"] * 3
    train, test = hashed_split(keys, 0.1)
    assert sorted(train + test) == list(range(22))
    copies = {19, 20, 21}
    assert copies <= set(train) or copies <= set(test)


def test_a_run_name_of_tensors_loads_nothing_and_says_how_to_pass_them():
    message = one_line(lambda: load_dataset("tensors:0123456789ab", "test"))
    assert "train_data=" in message and "test_data=" in message
    assert "hex digits" in one_line(lambda: check_dataset_name("tensors:not-a-hash"))
