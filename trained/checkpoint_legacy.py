"""Checkpoints of formats 1 and 2, whose numpy RNG state is a pickled `np.ndarray`.

Formats 1 (no `version` key) and 2 pickled `np.random.get_state()`, whose key array pickles as
`numpy._core.multiarray._reconstruct(np.ndarray, ...)` with a `np.dtype` and raw bytes. Loading
those with numpy's own constructors allowed would let a crafted file build any array from raw
bytes, an object array among them, whose elements are then read as pointers (a segfault, or
memory the author of the file chose). So these names are bound to stand-ins here instead:

    numpy.dtype          `LegacyDtype`: the name of a numeric dtype (u1..u8, i1..i8, f2..f8,
                         b1) and its byte order, nothing else (no fields, subarrays or flags)
    numpy.ndarray        `LegacyArray`, the class `_reconstruct` is called with
    ..._reconstruct      an empty `LegacyArray`, whose state must then be a shape of at most
                         4 dims and 2**20 elements and exactly that many bytes of that dtype

and the bytes become a numeric `np.ndarray` by `np.frombuffer`, which copies no pointer. The
file is then converted to the current layout (`upgrade`): the RNG states as tensors, numbers
and lists; a stand-in anywhere else refuses the file. What this trusts: that an old file's
tensors and numbers are what it says; they are validated like any checkpoint's afterwards.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .checkpoint_schema import Invalid

MAX_ELEMENTS = 2**20


class Refused(ValueError):
    """What a stand-in raises for anything but a small numeric array."""


NUMERIC_DTYPES = {f"{k}{n}" for k, sizes in (("u", "1248"), ("i", "1248"), ("f", "248")) for n in sizes} | {"b1"}


class LegacyDtype:
    """Stands for `np.dtype(name, align, copy)` of a pickled numeric dtype."""

    def __init__(self, name, align=False, copy=True):
        if type(name) is not str or name not in NUMERIC_DTYPES:
            raise Refused(f"dtype {str(name)[:20]!r} is not a numeric dtype")
        self.name, self.order = name, "="

    def __setstate__(self, state):
        # (version, byte order, subarray, names, fields, itemsize, alignment, flags) of a plain dtype
        if (
            type(state) is not tuple
            or len(state) != 8
            or state[0] != 3
            or state[1] not in ("<", ">", "|", "=")
            or state[2:5] != (None, None, None)
            or state[5:] != (-1, -1, 0)
        ):
            raise Refused("a dtype with fields, a subarray or flags is not a numeric dtype")
        self.order = state[1]

    def numpy(self) -> np.dtype:
        return np.dtype(self.name).newbyteorder(self.order if self.order != "|" else "=")


class LegacyArray:
    """Stands for an `np.ndarray` rebuilt by `_reconstruct` and its state."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if type(state) is not tuple or len(state) != 5 or state[0] != 1:
            raise Refused("not the state of a pickled array")
        _, shape, dtype, fortran, data = state
        if type(dtype) is not LegacyDtype or type(fortran) is not bool or type(data) is not bytes:
            raise Refused("an array of other than a numeric dtype and raw bytes")
        if type(shape) is not tuple or len(shape) > 4 or any(type(n) is not int or n < 0 for n in shape):
            raise Refused("an array shape that is not a few whole numbers")
        count = math.prod(shape)
        dtype = dtype.numpy()
        if count > MAX_ELEMENTS or len(data) != count * dtype.itemsize:
            raise Refused(f"an array of {count} elements with {len(data)} bytes of data")
        self.array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def reconstruct(cls, shape, typecode):
    if cls is not LegacyArray or shape != (0,) or typecode != b"b":
        raise Refused("not the reconstruction of a plain array")
    return LegacyArray()


# The names a format-1/2 pickle uses, each bound to its stand-in.
LEGACY_GLOBALS = [
    (reconstruct, "numpy.core.multiarray._reconstruct"),
    (reconstruct, "numpy._core.multiarray._reconstruct"),
    (LegacyArray, "numpy.ndarray"),
    (LegacyDtype, "numpy.dtype"),
]


def load_legacy(f, map_location) -> dict:
    """torch.load of a format-1/2 file with the stand-ins, converted by `upgrade`."""
    with torch.serialization.safe_globals(LEGACY_GLOBALS):
        checkpoint = torch.load(f, map_location=map_location, weights_only=True)
    return upgrade(checkpoint)


def upgrade(checkpoint) -> dict:
    """A format-1/2 checkpoint in the current layout: numpy's and Python's RNG states as the
    tensors, numbers and lists of `trained.checkpoints.rng_state`. Raises Invalid for a file that
    is no format-1/2 checkpoint (a later version, or an array outside the numpy RNG state)."""
    if type(checkpoint) is not dict:
        raise Invalid(f"holds {type(checkpoint).__name__}, not a dict")
    if checkpoint.get("version", 1) not in (1, 2):
        raise Invalid(f"says format version {str(checkpoint.get('version'))[:20]}, which holds no numpy arrays")
    state = checkpoint.get("rng")
    if type(state) is not dict or type(state.get("numpy")) is not tuple or type(state.get("python")) is not tuple:
        raise Invalid("`rng` holds no numpy and Python states of format 1 or 2")
    numpy_state, python_state = state["numpy"], state["python"]
    if len(numpy_state) != 5 or type(numpy_state[1]) is not LegacyArray or numpy_state[1].array is None:
        raise Invalid("`rng.numpy` is not numpy's (name, keys, pos, has_gauss, cached_gaussian)")
    keys = numpy_state[1].array
    if keys.dtype.kind != "u" or keys.shape != (624,):
        raise Invalid(f"`rng.numpy` keys are {keys.dtype}{list(keys.shape)}, not 624 unsigned words")
    if len(python_state) != 3:
        raise Invalid("`rng.python` is not Python's (version, state, gauss_next)")
    name, _, pos, has_gauss, cached_gaussian = numpy_state
    upgraded = dict(checkpoint)
    upgraded["rng"] = {
        **state,
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached_gaussian": cached_gaussian,
        },
        "python": {
            "version": python_state[0],
            "state": list(python_state[1]) if type(python_state[1]) is tuple else python_state[1],
            "gauss_next": python_state[2],
        },
    }
    return upgraded
