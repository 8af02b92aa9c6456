"""The safetensors codec (trained/checkpoint/tensorfile.py): files the reference library reads and
writes, and every hostile header refused in one line before a buffer is read (issue 29, D3)."""

import io
import json
import os

import pytest
import torch

from tests.security.craft import checkpoint_path, declare_huge, fake_expect, raw_file, save_fake
from ugvae.errors import CheckpointError
from ugvae.trained.checkpoint import load
from ugvae.trained.checkpoint.tensorfile import DTYPES, Malformed, read_header, read_tensor, write

TENSORS = {
    "a": torch.arange(12, dtype=torch.float32).reshape(3, 4),
    "b": torch.tensor([1, -2], dtype=torch.int64),
    "c": torch.tensor([True, False, True]),
    "d": torch.tensor([2**32 - 1, 7], dtype=torch.uint32),
    "e": torch.tensor(3.5, dtype=torch.float64),
    "f": torch.zeros(0, 5, dtype=torch.bfloat16),
    "g": torch.tensor([1.5], dtype=torch.float16),
    "h": torch.tensor([255], dtype=torch.uint8),
    "i": torch.tensor([-5], dtype=torch.int32),
}


def read_all(path):
    with open(path, "rb") as f:
        header = read_header(f, os.path.getsize(path))
        return {name: read_tensor(f, entry) for name, entry in header.entries.items()}, header.metadata


def test_every_dtype_round_trips(tmp_path):
    path = str(tmp_path / "x.safetensors")
    with open(path, "wb") as f:
        write(f, TENSORS, {"k": "v"})
    tensors, metadata = read_all(path)
    assert (
        metadata == {"k": "v"}
        and set(tensors) == set(TENSORS)
        and set(DTYPES.values()) == {t.dtype for t in TENSORS.values()}
    )
    for name, tensor in TENSORS.items():
        assert tensors[name].dtype == tensor.dtype and torch.equal(tensors[name], tensor), name


def test_our_files_load_with_the_reference_library_and_its_files_with_ours(tmp_path):
    """Interop: a checkpoint written here is a standard safetensors file, and the reverse."""
    safetensors_torch = pytest.importorskip("safetensors.torch")  # the reference library (test extra)
    ours = save_fake(str(tmp_path), 3)
    theirs = safetensors_torch.load_file(ours)
    mine, metadata = read_all(ours)
    assert set(theirs) == set(mine) and all(torch.equal(theirs[k], mine[k]) for k in mine)
    from safetensors import safe_open

    with safe_open(ours, framework="pt") as f:
        assert f.metadata() == metadata and json.loads(f.metadata()["step"]) == 3
    reference = str(tmp_path / "reference.safetensors")
    safetensors_torch.save_file({k: v for k, v in TENSORS.items() if k != "d"}, reference, metadata={"k": "v"})
    tensors, metadata = read_all(reference)
    assert metadata == {"k": "v"} and all(torch.equal(tensors[k], v) for k, v in TENSORS.items() if k != "d")


ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
# name -> (header, data, length field or None, words of the refusal)
HOSTILE = {
    "shorter than a length field": (None, b"\0\0\0", None, "3 bytes long, too short for a safetensors header"),
    "an empty header": (b"", b"", None, "has a header that is not valid JSON"),
    "a header length beyond the file": ({"w": ENTRY}, b"\0" * 8, 10**6, "declares a header of 1000000 bytes"),
    "a header length of 2**63": ({"w": ENTRY}, b"\0" * 8, 2**63, "declares a header of 9223372036854775808 bytes"),
    "a header of 32 MB": (b"{" + b" " * 2**25 + b"}", b"", None, "declares a header of 33554434 bytes"),
    "a header that is no UTF-8": (b'{"\xff": 1}', b"", None, "not UTF-8"),
    "a header that is no JSON": (b'{"w": ', b"", None, "not valid JSON"),
    "a header nested 10**5 deep": (b"[" * 10**5 + b"]" * 10**5, b"", None, "nested more than 3 levels deep"),
    "a header that is a list": (b"[1]", b"", None, "no JSON object"),
    "a shape of 10**6 digits": (b'{"w": {"dtype": "F32", "shape": [' + b"9" * 10**6 + b"]}}", b"", None, "digits"),
    "a huge declared shape": (
        {"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}},
        b"\0" * 8,
        None,
        "data_offsets that disagree with its shape and dtype",
    ),
    "a shape of floats": ({"w": {**ENTRY, "shape": [2.0]}}, b"\0" * 8, None, "not at most 8 whole numbers"),
    "a negative shape": ({"w": {**ENTRY, "shape": [-2]}}, b"\0" * 8, None, "not at most 8 whole numbers"),
    "nine dimensions": ({"w": {**ENTRY, "shape": [1] * 9}}, b"\0" * 8, None, "not at most 8 whole numbers"),
    "a dtype outside the allowed set": ({"w": {**ENTRY, "dtype": "F8_E4M3"}}, b"\0" * 8, None, "a dtype outside"),
    "a dtype as a number": ({"w": {**ENTRY, "dtype": 4}}, b"\0" * 8, None, "a dtype outside"),
    "an entry with more keys": ({"w": {**ENTRY, "x": 1}}, b"\0" * 8, None, "not dtype, shape and data_offsets"),
    "offsets past the end": ({"w": {**ENTRY, "data_offsets": [8, 16]}}, b"\0" * 8, None, "leaves a gap"),
    "overlapping offsets": ({"w": ENTRY, "v": ENTRY}, b"\0" * 16, None, "overlaps the one before it"),
    "a gap between buffers": (
        {"w": ENTRY, "v": {**ENTRY, "data_offsets": [12, 20]}},
        b"\0" * 20,
        None,
        "leaves a gap before it",
    ),
    "a truncated buffer": ({"w": ENTRY}, b"\0" * 5, None, "declares 8 bytes of tensor data but holds 5"),
    "junk after the buffers": ({"w": ENTRY}, b"\0" * 12, None, "declares 8 bytes of tensor data but holds 12"),
    "metadata of numbers": ({"__metadata__": {"step": 3}}, b"", None, "not a map of strings to strings"),
    "a tensor name of 10**4 characters": ({"w" * 10**4: ENTRY}, b"\0" * 8, None, "longer than 512 characters"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_header_is_refused_in_one_line_before_any_buffer(name, tmp_path, monkeypatch):
    header, data, length, words = HOSTILE[name]
    path = raw_file(checkpoint_path(str(tmp_path), 3), header, data, length)
    from ugvae.trained.checkpoint import store

    monkeypatch.setattr(store, "read_tensor", lambda *a: pytest.fail("a buffer was read"))
    with pytest.raises(CheckpointError) as refused:
        load(path, fake_expect())
    message = str(refused.value)
    assert words in message and "\n" not in message and len(message) < 400, message


def test_a_buffer_cut_after_the_header_was_read_is_refused(tmp_path):
    """A file that shrinks between its size check and the read (a disk that fails) is no tensor."""
    buffer = io.BytesIO()
    write(buffer, {"w": torch.ones(4)}, {})
    data = buffer.getvalue()
    header = read_header(io.BytesIO(data), len(data))
    with pytest.raises(Malformed, match="shorter than its header says"):
        read_tensor(io.BytesIO(data[:-2]), header.entries["w"])


def test_huge_shapes_of_the_right_sizes_are_refused_against_the_modules(tmp_path):
    """D3: consistent offsets for 2**31 floats in a sparse file, refused against the live shapes."""
    path = declare_huge(save_fake(str(tmp_path), 3), "model.w", [2**31])
    assert os.path.getsize(path) > 2**33
    with pytest.raises(CheckpointError, match=r"`model.w` is torch.float32 \(2147483648,\), but torch.float32 \(10,\)"):
        load(path, fake_expect())
