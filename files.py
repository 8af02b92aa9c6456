"""Atomic file writes: every file ugvae writes is whole, old or new, whatever happens mid-write.

A file is written to a temporary name in its own folder, flushed to disk and renamed over the
old one (a rename is atomic on POSIX), so a kill or power cut at any moment leaves either the old
or the new file whole. Every file a command writes (JSON, CSV, Markdown, PNG, checkpoints) goes
through `atomic_write`; a disk that fills up mid-write raises `DiskFull`, naming the file and the
bytes it needed, and leaves the old file and no temporary one behind.
"""

from __future__ import annotations

import errno
import io
import json
import os

from .errors import DiskFull


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
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(path, folder, write) from None
        raise
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def disk_full(path: str, folder: str, write=None, needed: int | None = None) -> DiskFull:
    """The one-line error of a write to `path` that ran out of space; `write` is replayed into
    memory to tell how many bytes the file needs."""
    if needed is None and write is not None:
        buffer = io.BytesIO()
        try:
            write(buffer)
            needed = buffer.tell()
        except Exception:  # the size is a courtesy; the error to report is the full disk
            pass
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    size = f"it needs {needed} bytes, " if needed is not None else ""
    return DiskFull(
        f"no space left on the device to write {path} ({size}{free} bytes are free); the previous "
        "version of the file is intact: free some space and run the command again"
    )


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str, payload) -> None:
    """JSON with numpy/torch scalars written as floats."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=float))
