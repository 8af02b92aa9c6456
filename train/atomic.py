"""Atomic file writes: every file a run holds is whole, old or new, whatever happens mid-write.

A file is written to a temporary name in its own folder, flushed to disk and renamed over the
old one (a rename is atomic on POSIX), so a kill or power cut at any moment leaves either the old
or the new file whole.
"""

from __future__ import annotations

import json
import os


def atomic_write(path: str, write) -> None:
    """Call write(binary file) on a temporary file, then rename it to `path`.

    fsync before the rename, so that after a power cut the new name never points at unwritten
    blocks; fsync of the folder after it, so that the rename itself is on disk.
    """
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str, payload) -> None:
    """JSON with numpy/torch scalars written as floats."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=float))
