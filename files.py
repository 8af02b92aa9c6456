"""Atomic file writes, and reads that a planted file cannot redirect, hang or blow up.

A file is written to a temporary name in its own folder, flushed to disk and renamed over the
old one (a rename is atomic on POSIX), so a kill or power cut at any moment leaves either the old
or the new file whole. Every file a command writes (JSON, CSV, Markdown, PNG, checkpoints) goes
through `atomic_write`. The temporary name is `NAME.tmp-PID-RANDOM`, created with O_EXCL and
O_NOFOLLOW: a file or link planted under the name it will take is never written through, and
one planted under a name it might take is never opened. A disk that fills up mid-write raises
`DiskFull`, naming the file and the bytes it needed, however the writer reported it (an OSError
ENOSPC/EDQUOT, or torch's RuntimeError wrapping one), and leaves the old file and no temporary
one behind.

A folder that cannot be written (a read-only filesystem, no permission) raises `NotWritable`,
naming it, from every writer here and from `make_dirs`; a file past the process's size limit
(`ulimit -f`, EFBIG) is a DiskFull that names the limit; a path too long for the filesystem
(ENAMETOOLONG) is one RunError.

`append_whole` adds bytes to the end of a file whole or not at all: a write cut short by a full
disk is truncated back, so the file ends where it did (metrics.csv's rows).

`open_regular` opens a file only if it is a regular file, not a symbolic link, FIFO, device or
folder (a FIFO would block the reader forever); `read_json` reads JSON through it, with its size
and nesting depth bounded before the parser sees it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import secrets
import stat

from .errors import DataError, DiskFull, NotWritable, RunError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# EPERM too: some filesystems (and immutable files) answer it where others say EACCES.
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
# What torch's zip writer raises when the file under it stops accepting bytes; the OSError it
# lost is usually its __context__, else the free space tells.
TORCH_WRITE_FAILED = ("PytorchStreamWriter failed", "file write failed", "unexpected pos")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def atomic_write(path: str, write) -> None:
    """Call write(binary file) on a new temporary file, then rename it to `path`.

    fsync before the rename, so that after a power cut the new name never points at unwritten
    blocks; fsync of the folder after it, so that the rename itself is on disk. A link at
    `path` is replaced, never written through.
    """
    folder = os.path.dirname(path) or "."
    make_dirs(folder)
    tmp, fd = create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except IsADirectoryError:
            raise RunError(f"cannot write {path}: a folder of that name is in the way; move it aside") from None
        except OSError as e:  # an immutable file at `path`, a sticky folder of another user
            if e.errno in NOT_WRITABLE:
                raise not_writable(path, e) from None
            raise
    except BaseException as e:
        _remove(tmp)
        if isinstance(e, Exception) and is_no_space(e, folder, write):
            raise disk_full(path, folder, write) from None
        if isinstance(e, Exception) and caused_by(e, errno.EFBIG):
            raise too_large(path, write) from None
        raise
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def create_temporary(path: str) -> tuple[str, int]:
    """A new file `path.tmp-PID-RANDOM` and its descriptor, open for writing; never a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY
    for _ in range(16):
        tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:  # someone planted this very name: draw another
            continue
        except OSError as e:
            if e.errno in NOT_WRITABLE:
                raise not_writable(path, e) from None
            if e.errno in NO_SPACE:
                raise disk_full(path, os.path.dirname(path) or ".", needed=None) from None
            if e.errno == errno.ENAMETOOLONG:
                raise too_long(path) from None
            raise
    raise RunError(f"cannot create a temporary file next to {path}: 16 random names were all taken")


def make_dirs(path: str, exist_ok: bool = True) -> None:
    """`path` and its parents, as os.makedirs; NotWritable or DiskFull naming it."""
    try:
        os.makedirs(path, exist_ok=exist_ok)
    except OSError as e:
        if e.errno in NOT_WRITABLE:
            raise not_writable(path, e) from None
        if e.errno in NO_SPACE:
            raise disk_full(path, existing_parent(path)) from None
        if e.errno == errno.ENAMETOOLONG:
            raise too_long(path) from None
        raise


def check_writable(path: str) -> None:
    """NotWritable naming `path`, before any work, when the nearest existing folder of it cannot be
    written to (a read-only filesystem, or no permission)."""
    folder = existing_parent(path)
    if os.access(folder, os.W_OK):
        return
    read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
    raise not_writable(path, OSError(errno.EROFS if read_only else errno.EACCES, os.strerror(errno.EACCES)))


def existing_parent(path: str) -> str:
    """The nearest folder of `path`, itself included, that exists (for the free space of its disk)."""
    path = os.path.abspath(path)
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def not_writable(path: str, error: OSError) -> NotWritable:
    """The one-line error of a write to `path` refused by the filesystem (`error`: EROFS, EACCES or EPERM)."""
    why = "the filesystem is read-only" if error.errno == errno.EROFS else "permission denied"
    return NotWritable(f"cannot write {path}: {why}; make its folder writable, or write somewhere else")


def too_long(path: str) -> RunError:
    """The one-line error of a path the filesystem refuses as too long (ENAMETOOLONG)."""
    return RunError(f"cannot write {short_name(path)}: the path, or a name in it, is longer than the filesystem allows")


def too_large(path: str, write) -> DiskFull:
    """The one-line error of a write past this process's file size limit (EFBIG: `ulimit -f`)."""
    needed = replayed_size(write)
    size = f" ({needed} bytes)" if needed is not None else ""
    limit = resource_limit_text()
    return DiskFull(
        f"cannot write {path}{size}: it is larger than this process may write{limit}; the previous version of the "
        "file is intact: raise the limit (ulimit -f) and run the command again"
    )


def resource_limit_text() -> str:
    try:
        import resource
    except ImportError:  # Windows
        return ""
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return "" if soft == resource.RLIM_INFINITY else f" (the file size limit is {soft} bytes)"


def caused_by(error: BaseException, code: int) -> bool:
    """Whether `error`, or an exception it was raised from or during, is an OSError of errno `code`."""
    return any(isinstance(cause, OSError) and cause.errno == code for cause in causes(error))


def _remove(path: str):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def is_no_space(error: BaseException, folder: str | None = None, write=None) -> bool:
    """Whether `error` (or an exception it was raised from or during) means the disk is full."""
    for cause in causes(error):
        if isinstance(cause, OSError) and cause.errno in NO_SPACE:
            return True
        if "No space left on device" in str(cause) or "Disk quota exceeded" in str(cause):
            return True
        if folder is not None and write is not None and any(s in str(cause) for s in TORCH_WRITE_FAILED):
            needed = replayed_size(write)
            if needed is not None and needed > free_bytes(folder):
                return True
    return False


def causes(error: BaseException | None):
    """`error` and the exceptions it was raised from or during, each once."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def replayed_size(write) -> int | None:
    """The bytes `write` produces, replayed into memory; None if it fails there too."""
    buffer = io.BytesIO()
    try:
        write(buffer)
    except Exception:  # the size is a courtesy; the error to report is the full disk
        return None
    return buffer.tell()


def free_bytes(folder: str) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def disk_full(path: str, folder: str, write=None, needed: int | None = None) -> DiskFull:
    """The one-line error of a write to `path` that ran out of space; `write` is replayed into
    memory to tell how many bytes the file needs."""
    if needed is None and write is not None:
        needed = replayed_size(write)
    size = f"it needs {needed} bytes, " if needed is not None else ""
    return DiskFull(
        f"no space left on the device to write {path} ({size}{free_bytes(folder)} bytes are free); the previous "
        "version of the file is intact: free some space and run the command again"
    )


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str, payload) -> None:
    """JSON with numpy/torch scalars written as floats."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=float))


class NotARegularFile(DataError):
    """A path that names a link, FIFO, device or folder where a regular file was expected;
    `reason` says which ("is a FIFO, not a regular file")."""

    def __init__(self, path: str, reason: str, what: str = "file"):
        super().__init__(f"{what} {path} {reason}")
        self.path, self.reason = path, reason


def open_regular(path: str, what: str = "file"):
    """`path` opened for binary reading, if it is a regular file; else NotARegularFile.

    O_NOFOLLOW refuses a symbolic link, and O_NONBLOCK makes opening a FIFO return at once
    (instead of waiting for a writer) so that fstat can refuse it; the descriptor's own fstat
    decides, so the file cannot be swapped between a check and the open.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.EMLINK and _NOFOLLOW):  # EMLINK: FreeBSD's ELOOP
            raise NotARegularFile(path, "is a symbolic link; only regular files are read", what) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise NotARegularFile(path, f"is {kind}, not a regular file", what)
    if _NONBLOCK:
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def append_whole(path: str, data: bytes, what: str = "file") -> None:
    """Add `data` to the end of `path`, an existing regular file, whole or not at all.

    NotARegularFile for a link, FIFO, device or folder, so that an append never goes through a
    planted link. A write cut short (a full disk mid-row) is truncated back to the old end, so
    the DiskFull it raises is true: the file is as it was. The caller is the file's one writer
    (it holds the run's lock), so nobody appends between the old end and the truncation.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.EMLINK and _NOFOLLOW):
            raise NotARegularFile(path, "is a symbolic link; only regular files are written", what) from None
        if e.errno == errno.EISDIR:
            raise NotARegularFile(path, "is a folder, not a regular file", what) from None
        if e.errno == errno.ENXIO:  # a FIFO without a reader
            raise NotARegularFile(path, "is a FIFO, not a regular file", what) from None
        if e.errno in NOT_WRITABLE:
            raise not_writable(path, e) from None
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise NotARegularFile(path, "is not a regular file", what)
        end, written = status.st_size, 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError as e:
            try:
                os.ftruncate(fd, end)
            except OSError:
                raise DiskFull(
                    f"no space left on the device to add to {path}; it now ends in a torn line, which the next "
                    "resume drops: free some space and run the command again"
                ) from None
            if e.errno in NO_SPACE:
                free = free_bytes(os.path.dirname(path) or ".")
                raise DiskFull(
                    f"no space left on the device to add {len(data)} bytes to {path} ({free} bytes are free); "
                    "the file is as it was before: free some space and run the command again"
                ) from None
            raise
    finally:
        os.close(fd)


def printable_name(name: str) -> str:
    """A file name as text that encodes anywhere: bytes of the name that are not UTF-8 (a Latin-1
    name, which Python reads as surrogate escapes) are shown as \\xNN; other names are unchanged."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name holds, from JSON say
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def short_name(name: str, keep: int = 100) -> str:
    """`printable_name(name)`, its middle cut out past 2 * `keep` characters: a message stays one
    readable line however deep a path goes."""
    shown = printable_name(name)
    return shown if len(shown) <= 2 * keep else f"{shown[:keep]}...{shown[-keep:]}"


MAX_JSON_BYTES = 4 * 2**20
MAX_JSON_DEPTH = 32


def read_json(path: str, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES, what: str = "file"):
    """The JSON value in `path`, a regular file of at most `max_bytes`, nested at most
    `max_depth` arrays/objects deep; DataError naming the file otherwise (also for bad JSON).

    The depth is measured on the text before parsing: json's parser recurses once per level,
    and a file of a few kB of brackets would otherwise end in RecursionError.
    """
    with open_regular(path, what) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DataError(f"{what} {path} is larger than {max_bytes} bytes; it is no file this package wrote")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise DataError(f"{what} {path} nests {depth} levels deep, more than the {max_depth} allowed")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{what} {path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def json_depth(text: str) -> int:
    """The deepest nesting of [ and { in JSON text, outside strings (one pass, linear time)."""
    depth = deepest = 0
    in_string, escaped_at = False, -1
    for match in _SIGNIFICANT.finditer(text):
        char, at = match[0], match.start()
        if in_string:
            if char == "\\" and at != escaped_at:
                escaped_at = at + 1  # the next character is escaped, whatever it is
            elif char == '"' and at != escaped_at:
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


_SIGNIFICANT = re.compile(r'["\\\[\]{}]')
