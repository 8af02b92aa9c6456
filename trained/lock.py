"""One writer per run directory: an exclusive lock on the run directory itself.

Training, resuming and every command that writes into a run (evaluate, the experiments) hold
it while they run, so two of them never interleave checkpoints, metrics rows or results.

The lock is a `flock` on a descriptor of the run directory, not on a file in it: `rm RUN/.lock`
cannot hand it to a second writer (a lock on a file would stay on the deleted inode while the
next writer locks a new one), and `mv RUN` moves it with the directory. `RUN/.lock` is only a
note of the holder's PID, for the message that refuses a second writer; it is opened with
O_NOFOLLOW, so a link planted there is refused instead of written through, and it is removed
when the lock is released. The kernel releases a flock when its process dies, so a lock left by
a killed run never blocks the next one. Within one process the lock is re-entrant (`evaluate`
inside `compare`, say).

Where a directory cannot be flocked (some network filesystems) the note file itself is
locked, as before. Without fcntl (Windows) the note file is locked with `msvcrt.locking`; a
system with neither refuses to write into runs, in one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from ..errors import RunError, RunLocked
from ..files import NotARegularFile, open_regular

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
# realpath of a run directory -> [release function, depth]: a flock is per open file
# description, so a second open in this process would block on the first.
_held: dict[str, list] = {}


@contextlib.contextmanager
def run_lock(run_dir: str, new: bool = False):
    """Hold the lock of `run_dir` for the duration of the block; RunLocked if another process
    holds it, RunError if RUN/.lock is a link or anything but a regular file.

    `new`: a run directory just claimed, before its config.json is written. Any other folder
    without a config.json is not a run: it is not locked (and gets no note), and the command
    reading it says what is wrong. The note goes when the lock does, so a new run that failed
    before its config.json leaves an empty directory.
    """
    key = os.path.realpath(run_dir)
    if not new and not os.path.isfile(os.path.join(run_dir, "config.json")):
        yield
        return
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    release = _acquire(run_dir, new)
    _held[key] = [release, 1]
    try:
        yield
    finally:
        _held.pop(key, None)
        release()


def _acquire(run_dir: str, new: bool):
    """Take the lock; returns the function that releases it."""
    note = os.path.join(run_dir, LOCK_NAME)
    if fcntl is None and msvcrt is None:
        raise RunError(
            f"cannot lock {run_dir} for writing: this system has neither fcntl nor msvcrt file locks; "
            "run ugvae on Linux, macOS or Windows"
        )
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
            return _acquire_note(run_dir, note, new)
        try:
            note_fd = _open_note(note, courtesy=True)
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
    return _acquire_note(run_dir, note, new)


def _acquire_note(run_dir: str, note: str, new: bool):
    """Lock the note file itself (no directory locks here); the note stays, as it is the lock,
    except in a new run directory that never got its config.json."""
    fd = _open_note(note)
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


def _open_note(note: str, courtesy: bool = False) -> int | None:
    """RUN/.lock opened for writing, created if missing; never through a link. With `courtesy`
    (the lock is elsewhere), None where it cannot be created: a read-only run, a full disk."""
    try:
        fd = os.open(note, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC | _NONBLOCK, 0o644)
    except OSError as e:
        if courtesy and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            return None
        if e.errno == errno.ELOOP:
            raise RunError(f"{note} is a symbolic link; a run's lock note is a plain file: remove the link") from None
        if e.errno == errno.EISDIR:
            raise RunError(f"{note} is a folder; a run's lock note is a plain file: move the folder aside") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunError(f"{note} is not a regular file (a FIFO or device); remove it")
    return fd


def _write_pid(fd: int):
    """The holder's PID into the note; unbuffered, so nothing is left to flush (and fail) at close."""
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
    except OSError:
        pass  # a full disk or a read-only run: the PID only helps the message of a second writer


def _locked(run_dir: str, note: str) -> RunLocked:
    holder = "unknown"
    with contextlib.suppress(OSError, NotARegularFile):
        with open_regular(note) as f:
            text = f.read(32).decode(errors="replace").strip()
        holder = text if text.isdigit() else holder
    return RunLocked(f"{run_dir} is in use by process {holder}; wait for it to finish or stop it first")
