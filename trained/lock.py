"""One writer per run directory: an exclusive lock on the run directory itself.

Training, resuming and every command that writes into a run (evaluate, the experiments) hold
it while they run, so two of them never interleave checkpoints, metrics rows or results.

The lock is a `flock` on a descriptor of the run directory, not on a file in it: `rm RUN/.lock`
cannot hand it to a second writer (a lock on a file would stay on the deleted inode while the
next writer locks a new one), and `mv RUN` moves it with the directory. `RUN/.lock` is only a
note of the holder's PID, for the message that refuses a second writer; it is opened with
O_NOFOLLOW, so a link planted there is refused instead of written through, and it is removed
when the lock is released, and refused when it has more than one link (a hard link planted
there would make writing the PID truncate another file). The kernel releases a flock when its
process dies, so a lock left by a killed run never blocks the next one. Within one thread the
lock is re-entrant (`evaluate` inside `compare`, say); another thread of the same process is
refused like another process.

Taking the lock is where a writer first touches the run, so it is where a run that cannot be
written (a read-only filesystem, no permission) is refused, in one line (`NotWritable`), before
any work; commands that only read a run take no lock and work on it as it is.

Where a directory cannot be flocked (some network filesystems) the note file itself is
locked, as before. Without fcntl (Windows) the note file is locked with `msvcrt.locking`; a
system with neither refuses to write into runs, in one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading

from ..errors import NotWritable, RunError, RunLocked
from ..files import NOT_WRITABLE, NotARegularFile, open_regular

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None

LOCK_NAME = ".lock"
# msvcrt.locking locks bytes from the file position: a byte far past the PID keeps the note readable.
_MSVCRT_OFFSET = 2**20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
# realpath of a run directory -> [release function, depth, holding thread]: a flock is per open
# file description, so a second open in this process would block on the first.
_held: dict[str, list] = {}
_held_guard = threading.Lock()  # taking a lock and registering it are one step for the threads


@contextlib.contextmanager
def run_lock(run_dir: str, new: bool = False, elsewhere: str | None = None):
    """Hold the lock of `run_dir` for the duration of the block; RunLocked if another process or
    thread holds it, NotWritable if the run cannot be written, RunError if RUN/.lock is a link or
    anything but a regular file with one link.

    `new`: a run directory just claimed, before its config.json is written. Any other folder
    without a config.json is not a run: it is not locked (and gets no note), and the command
    reading it says what is wrong. The note goes when the lock does, so a new run that failed
    before its config.json leaves an empty directory. `elsewhere`: the field that sends the
    command's output out of the run, which the refusal of a read-only run suggests.
    """
    key = os.path.realpath(run_dir)
    if not new and not os.path.isfile(os.path.join(run_dir, "config.json")):
        yield
        return
    with _held_guard:
        held = _held.get(key)
        if held is None:
            held = _held[key] = [_acquire(run_dir, new, elsewhere), 0, threading.get_ident()]
        elif held[2] != threading.get_ident():
            raise RunLocked(
                f"{run_dir} is in use by another thread of this process ({os.getpid()}); "
                "let it finish first: one writer at a time"
            )
        held[1] += 1
    try:
        yield
    finally:
        with _held_guard:
            held[1] -= 1
            if held[1] == 0:
                del _held[key]
                held[0]()


def _acquire(run_dir: str, new: bool, elsewhere: str | None):
    """Take the lock; returns the function that releases it."""
    note = os.path.join(run_dir, LOCK_NAME)
    if fcntl is None and msvcrt is None:
        raise RunError(
            f"cannot lock {run_dir} for writing: this system has neither fcntl nor msvcrt file locks; "
            "run ugvae on Linux, macOS or Windows"
        )
    if not os.access(run_dir, os.W_OK | os.X_OK):  # a read-only filesystem, or permission bits (not for root)
        raise _not_writable(run_dir, errno.EROFS if _read_only(run_dir) else errno.EACCES, elsewhere)
    if fcntl is not None:
        dir_fd = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(dir_fd)
            raise _locked(run_dir, note) from None
        except OSError as e:  # a filesystem without flock on directories: lock the note instead
            os.close(dir_fd)
            if e.errno not in (errno.EBADF, errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP):
                raise
            return _acquire_note(run_dir, note, new, elsewhere)
        try:
            note_fd = _open_note(run_dir, note, elsewhere, courtesy=True)
        except BaseException:
            os.close(dir_fd)
            raise
        if note_fd is not None:
            _write_pid(note_fd)
            os.close(note_fd)

        def release():
            try:
                os.remove(note)  # before the lock goes: the next holder writes its own
            except OSError:
                pass
            os.close(dir_fd)  # closing the last descriptor releases the flock

        return release
    return _acquire_note(run_dir, note, new, elsewhere)


def _acquire_note(run_dir: str, note: str, new: bool, elsewhere: str | None):
    """Lock the note file itself (no directory locks here); the note stays, as it is the lock,
    except in a new run directory that never got its config.json."""
    fd = _open_note(run_dir, note, elsewhere)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, _MSVCRT_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as e:
        os.close(fd)
        if isinstance(e, BlockingIOError) or e.errno in (errno.EACCES, errno.EAGAIN, errno.EDEADLK):
            raise _locked(run_dir, note) from None
        raise
    except BaseException:
        os.close(fd)
        raise
    _write_pid(fd)

    def release():
        if new and not os.path.exists(os.path.join(run_dir, "config.json")):
            with contextlib.suppress(OSError):
                os.remove(note)  # nobody else knows this directory yet
        if fcntl is None:
            os.lseek(fd, _MSVCRT_OFFSET, os.SEEK_SET)
            with contextlib.suppress(OSError):
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        os.close(fd)

    return release


def _open_note(run_dir: str, note: str, elsewhere: str | None, courtesy: bool = False) -> int | None:
    """RUN/.lock opened for writing, created if missing; never through a link, never a file with
    other names. With `courtesy` (the lock is elsewhere), None where a full disk refuses it."""
    try:
        fd = os.open(note, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC | _NONBLOCK, 0o644)
    except OSError as e:
        if courtesy and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return None
        if e.errno in NOT_WRITABLE:
            raise _not_writable(run_dir, e.errno, elsewhere) from None
        if e.errno == errno.ELOOP:
            raise RunError(f"{note} is a symbolic link; a run's lock note is a plain file: remove the link") from None
        if e.errno == errno.EISDIR:
            raise RunError(f"{note} is a folder; a run's lock note is a plain file: move the folder aside") from None
        raise
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise RunError(f"{note} is not a regular file (a FIFO or device); remove it")
    if status.st_nlink != 1:
        os.close(fd)
        raise RunError(
            f"{note} has {status.st_nlink} links: a hard link to another file, which writing the lock would "
            "overwrite; remove it"
        )
    return fd


def _write_pid(fd: int):
    """The holder's PID into the note; unbuffered, so nothing is left to flush (and fail) at close."""
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
    except OSError:
        pass  # a full disk: the PID only helps the message of a second writer


def _locked(run_dir: str, note: str) -> RunLocked:
    holder = "unknown"
    with contextlib.suppress(OSError, NotARegularFile):
        with open_regular(note) as f:
            text = f.read(32).decode(errors="replace").strip()
        holder = text if text.isdigit() else holder
    return RunLocked(f"{run_dir} is in use by process {holder}; wait for it to finish or stop it first")


def _read_only(path: str) -> bool:
    """Whether `path` is on a filesystem mounted read-only."""
    statvfs = getattr(os, "statvfs", None)
    return statvfs is not None and bool(statvfs(path).f_flag & os.ST_RDONLY)


def _not_writable(run_dir: str, code: int, elsewhere: str | None) -> NotWritable:
    why = "its filesystem is read-only" if code == errno.EROFS else "permission denied"
    fix = f"send the output elsewhere with `{elsewhere}`, or " if elsewhere else ""
    return NotWritable(
        f"{run_dir} cannot be written ({why}) and this command writes into the run: {fix}copy the run to a "
        "writable folder and use the copy; commands that only read a run work on it as it is"
    )
