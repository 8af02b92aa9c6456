"""One writer per run directory: an exclusive `flock` on RUN/.lock.

Training, resuming and every command that writes into a run (evaluate, the experiments) hold
it while they run, so two of them never interleave checkpoints, metrics rows or results. The
holder writes its PID into the file, and a second writer is refused with a message naming it.
The kernel releases a flock when its process dies, so a lock left by a killed run never blocks
the next one. Within one process the lock is re-entrant (`evaluate` inside `compare`, say).
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from ..errors import RunLocked

LOCK_NAME = ".lock"
# realpath of a run directory -> [open lock file, depth]: flock is per open file, so a second
# open in this process would block on the first.
_held: dict[str, list] = {}


@contextlib.contextmanager
def run_lock(run_dir: str, new: bool = False):
    """Hold RUN/.lock for the duration of the block; RunLocked if another process holds it.

    `new`: a run directory just claimed, before its config.json is written. Any other folder
    without a config.json is not a run: it is not locked (and gets no lock file), and the
    command reading it says what is wrong.
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
    path = os.path.join(run_dir, LOCK_NAME)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise RunLocked(
            f"{run_dir} is in use by process {holder} (it holds {path}); wait for it to finish or stop it first"
        ) from None
    except BaseException:
        f.close()
        raise
    try:
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
        except OSError:
            pass  # a full disk: the PID only helps the message of a second writer; the lock holds
        _held[key] = [f, 1]
        yield
    finally:
        _held.pop(key, None)
        f.close()  # closing the last descriptor releases the flock
