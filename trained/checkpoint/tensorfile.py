"""The safetensors file format, written and read with every size checked before it is used.

A file is an 8-byte little-endian header length N, N bytes of JSON, then raw buffers:

    {"NAME": {"dtype": "F32", "shape": [3, 4], "data_offsets": [BEGIN, END]}, ...,
     "__metadata__": {"KEY": "VALUE", ...}}

offsets count from the end of the header; the buffers follow one another without gaps or
overlaps and end where the file ends; the header is padded with spaces to a multiple of 8 bytes.
Files written here load with the reference library (`safetensors.torch.load_file`) and its files
load here (tests/trained/test_checkpoint_format.py).

Reading is bounded by construction, in this order: the header length is capped
(`MAX_HEADER_BYTES`) and must fit the file; the header is parsed only if it nests at most 3
levels and its numbers are short (`parse_json`); every entry's dtype is one of `DTYPES`, its shape
a few whole numbers and its offsets exactly its size, contiguous, inside the file. Only then may
a caller compare the shapes with what it expects and read a buffer, into a tensor of exactly the
declared size (`read_tensor`). A header that breaks any rule raises `Malformed`, whose message
never shows an unbounded part of the file.
"""

from __future__ import annotations

import json
import math
import sys
from typing import NamedTuple

import torch

from ...files import json_depth

MAX_HEADER_BYTES = 16 * 2**20  # a checkpoint's header is tens of kB; the reference allows 100 MB
MAX_ENTRIES = 65_536
MAX_DIMS = 8
MAX_NAME = 512
MAX_DIGITS = 40  # of a JSON number: 2**128 has 39
DTYPES = {
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "U32": torch.uint32,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
# The format is little-endian; so is every machine torch ships wheels for.
assert sys.byteorder == "little", "safetensors files are little-endian"


class Malformed(ValueError):
    """A file that is no safetensors file within the bounds; the message says what, in a few words."""


class Entry(NamedTuple):
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute offsets in the file
    end: int


class Header(NamedTuple):
    entries: dict[str, Entry]
    metadata: dict[str, str]


def write(f, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write `tensors` (any of `DTYPES`, on any device) and `metadata` to the binary file `f`.

    Buffers are ordered by element size, then name (as the reference writes them), so that each
    starts at a multiple of its element size.
    """
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header, offset = {}, 0
    for name in order:
        tensor = tensors[name]
        end = offset + tensor.numel() * tensor.element_size()
        header[name] = {"dtype": NAMES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, end]}
        offset = end
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    text += b" " * (-len(text) % 8)
    f.write(len(text).to_bytes(8, "little"))
    f.write(text)
    for name in order:
        tensor = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        if tensor.numel():
            f.write(tensor.view(torch.uint8).numpy())


def read_header(f, file_size: int) -> Header:
    """The header of the file `f` of `file_size` bytes, each entry checked (module docstring)."""
    if file_size < 8:
        raise Malformed(f"is {file_size} bytes long, too short for a safetensors header")
    length = int.from_bytes(f.read(8), "little")
    if length > MAX_HEADER_BYTES or 8 + length > file_size:
        raise Malformed(f"declares a header of {length} bytes in a file of {file_size}")
    raw = f.read(length)
    if len(raw) != length:
        raise Malformed("ends inside its header")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("has a header that is not UTF-8 text") from None
    header = parse_json(text, max_depth=3, what="a header")
    if type(header) is not dict or len(header) > MAX_ENTRIES:
        raise Malformed(f"has a header that is no JSON object of at most {MAX_ENTRIES} entries")
    metadata = header.pop("__metadata__", {})
    if type(metadata) is not dict or any(type(k) is not str or type(v) is not str for k, v in metadata.items()):
        raise Malformed("has `__metadata__` that is not a map of strings to strings")
    start = 8 + length
    entries = {name: _entry(name, info, start) for name, info in header.items()}
    position = start
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != position:
            why = "overlaps the one before it" if entry.begin < position else "leaves a gap before it"
            raise Malformed(f"has a tensor whose data {why} ({shown_name(name)})")
        position = entry.end
    if position != file_size:
        raise Malformed(f"declares {position - start} bytes of tensor data but holds {file_size - start}")
    return Header(entries, metadata)


def _entry(name, info, start: int) -> Entry:
    if type(name) is not str or len(name) > MAX_NAME:
        raise Malformed(f"has a tensor name longer than {MAX_NAME} characters")
    if type(info) is not dict or set(info) != {"dtype", "shape", "data_offsets"}:
        raise Malformed(f"has an entry that is not dtype, shape and data_offsets ({shown_name(name)})")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES:
        raise Malformed(f"has a tensor of a dtype outside {', '.join(DTYPES)} ({shown_name(name)})")
    if type(shape) is not list or len(shape) > MAX_DIMS or not all(type(n) is int and n >= 0 for n in shape):
        raise Malformed(f"has a shape that is not at most {MAX_DIMS} whole numbers ({shown_name(name)})")
    if type(offsets) is not list or len(offsets) != 2 or not all(type(n) is int and n >= 0 for n in offsets):
        raise Malformed(f"has data_offsets that are not two whole numbers ({shown_name(name)})")
    size = math.prod(shape) * DTYPES[dtype].itemsize  # exact: shapes and offsets are at most 40 digits
    if offsets[1] - offsets[0] != size:
        raise Malformed(f"has data_offsets that disagree with its shape and dtype ({shown_name(name)})")
    return Entry(DTYPES[dtype], tuple(shape), start + offsets[0], start + offsets[1])


def read_tensor(f, entry: Entry) -> torch.Tensor:
    """The buffer of `entry` as a tensor of its dtype and shape (its bytes only are read)."""
    size = entry.end - entry.begin
    if size == 0:
        return torch.empty(entry.shape, dtype=entry.dtype)
    f.seek(entry.begin)
    buffer = bytearray(size)
    if f.readinto(buffer) != size:
        raise Malformed("is shorter than its header says (truncated since it was opened)")
    return torch.frombuffer(buffer, dtype=entry.dtype).reshape(entry.shape)


# -- JSON within bounds ----------------------------------------------------------------------
def parse_json(text: str, max_depth: int, what: str):
    """The JSON value of `text`, nested at most `max_depth` deep, with numbers of at most
    `MAX_DIGITS` digits (Python's int() of a long digit string is quadratic, and float() makes
    inf of 1e999): Malformed otherwise. NaN and +-Infinity parse to floats; callers that need
    finite numbers check them."""
    if json_depth(text) > max_depth:
        raise Malformed(f"has {what} nested more than {max_depth} levels deep")
    try:
        return json.loads(text, parse_int=_short_int, parse_float=_short_float)
    except Malformed:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise Malformed(f"has {what} that is not valid JSON ({getattr(e, 'msg', type(e).__name__)})") from None


def _short_int(digits: str) -> int:
    if len(digits) > MAX_DIGITS:
        raise Malformed(f"holds a number of {len(digits)} digits")
    return int(digits)


def _short_float(digits: str) -> float:
    if len(digits) > MAX_DIGITS + 8:  # mantissa and exponent
        raise Malformed(f"holds a number of {len(digits)} digits")
    return float(digits)


def shown_name(name) -> str:
    """A tensor or field name for a message: at most 60 characters, printable."""
    text = name if type(name) is str else type(name).__name__
    return (text[:57] + "...") if len(text) > 60 else text.encode("ascii", "backslashreplace").decode()
