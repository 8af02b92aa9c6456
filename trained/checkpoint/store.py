"""The checkpoints/ folder of a run: which files are checkpoints, loading one with fall-back to
the one before, and writing one with rotation that never overwrites and never reads contents.

`RUN/checkpoints/step-NNNNNNNNN.safetensors` (nine digits; any number of ASCII digits is read)
are the checkpoints, oldest first by their step. A file that cannot be loaded is skipped for
the one before it with one line naming it (`latest`); a save keeps the newest `keep` files whose
header passes `validate` and sets the others aside as `NAME.unreadable` (`-2`, `-3`, ... when
that name is taken), so that a damaged file never pushes a good one out and no file is ever
overwritten. Files of the older pickled format (`step-N.pt`) are never read here: a command that
finds only those says so in one line, naming `ugvae upgrade RUN` (trained/checkpoint/upgrade.py).
"""

from __future__ import annotations

import logging
import os
import re
import stat

from ...errors import CheckpointError, RunError
from ...files import NotARegularFile, atomic_write, open_regular
from .payload import Checkpoint, decode, encode
from .tensorfile import Entry, Header, Malformed, read_header, read_tensor, write
from .validate import Expected, Invalid, check_values, validate

# ASCII digits (\d would take any Unicode digit, which int() reads), at most 18: no step is larger.
CHECKPOINT_RE = re.compile(r"step-([0-9]{1,18})\.safetensors")
OLDER_RE = re.compile(r"step-([0-9]{1,18})\.pt")
SET_ASIDE = ".unreadable"
logger = logging.getLogger(__name__)


class OlderCheckpoints(RunError):
    """A run whose checkpoints are all of the older, pickled format: only `upgrade` reads them."""

    def __init__(self, run_dir: str, names: list[str]):
        shown = ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")
        super().__init__(
            f"{run_dir} has checkpoints of an older format ({shown}), which only the upgrade command reads: "
            f"convert them once with `ugvae upgrade {run_dir}` (`python run.py upgrade {run_dir}` in a checkout, "
            "`ugvae.trained.upgrade_run(RUN_DIR)` in Python), then run this command again"
        )
        self.run_dir = run_dir


def notice(message: str) -> None:
    """One line: what a library function did to the user's files, and why."""
    logger.warning(message)


# -- names ---------------------------------------------------------------------------------
def checkpoint_path(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, "checkpoints", f"step-{step:09d}.safetensors")


def checkpoint_step(path: str) -> int:
    """The step a checkpoint's file name says."""
    return int(CHECKPOINT_RE.fullmatch(os.path.basename(path))[1])


def _listed(run_dir: str, pattern: re.Pattern) -> list[str]:
    folder = os.path.join(run_dir, "checkpoints")
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise RunError(f"{folder} is a file, not the folder of the run's checkpoints; move it aside") from None
    steps = {os.path.join(folder, n): int(m[1]) for n in names if (m := pattern.fullmatch(n))}
    return sorted(steps, key=steps.get)


def list_checkpoints(run_dir: str) -> list[str]:
    """checkpoints/step-N.safetensors of `run_dir` by step, oldest first (whatever each holds)."""
    return _listed(run_dir, CHECKPOINT_RE)


def older_checkpoints(run_dir: str) -> list[str]:
    """checkpoints/step-N.pt of `run_dir` (the pickled formats 1-3) by step, oldest first."""
    return _listed(run_dir, OLDER_RE)


def never_checkpointed(run_dir: str) -> bool:
    """Whether checkpoints/ holds no file of any checkpoint at all, set-aside ones included (a run
    stopped before its first checkpoint); temporaries of a killed writer do not count."""
    try:
        names = os.listdir(os.path.join(run_dir, "checkpoints"))
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        return False
    return not any(n.startswith("step-") and ".tmp-" not in n for n in names)


# -- loading -------------------------------------------------------------------------------
def open_checkpoint(path: str):
    """`path` opened for reading if it is a regular file (no link, FIFO or device), else a CheckpointError."""
    try:
        return open_regular(path, "checkpoint")
    except NotARegularFile as e:
        raise CheckpointError(path, e.reason.split(";")[0], "remove it") from None
    except OSError as e:
        raise CheckpointError(path, f"cannot be opened ({e.strerror})") from None


def load(path: str, expect: Expected) -> Checkpoint:
    """The checkpoint file `path`, validated against `expect` (trained/checkpoint/validate.py);
    only the weights unless `expect.training`. CheckpointError says why a file cannot be used."""
    name = os.path.basename(path)
    if OLDER_RE.fullmatch(name):
        raise OlderCheckpoints(os.path.dirname(os.path.dirname(os.path.abspath(path))), [name])
    named = CHECKPOINT_RE.fullmatch(name)
    with open_checkpoint(path) as f:
        try:
            header = read_header(f, os.fstat(f.fileno()).st_size)
            fields = validate(header, expect, int(named[1]) if named else None)
            tensors = {
                name: check_values(name, read_tensor(f, entry))
                for name, entry in header.entries.items()
                if expect.training or name.startswith(("model.", "guide."))
            }
        except (Malformed, Invalid) as e:
            raise _refused(path, e) from None
        except OSError as e:  # a disk that fails under the read
            raise CheckpointError(path, f"cannot be read ({e.strerror})") from None
    return decode(fields, tensors)


def _refused(path: str, error: Malformed | Invalid) -> CheckpointError:
    reason = str(error)
    if isinstance(error, Malformed):
        reason = f"cannot be read (it {reason})"
    elif reason.startswith("`"):
        reason = f"holds a bad field: {reason}"
    fix = getattr(error, "fix", None)
    return CheckpointError(path, reason, fix) if fix else CheckpointError(path, reason)


def latest(run_dir: str, expect: Expected) -> Checkpoint | None:
    """The newest checkpoint of `run_dir` that loads; damaged, foreign or ill-fitting newer ones
    are skipped with one line naming them. None where checkpoints/ holds none; OlderCheckpoints
    where it holds only files of the older format; a RunError naming each file where none loads."""
    skipped = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            checkpoint = load(path, expect)
        except CheckpointError as e:
            skipped.append(f"{os.path.basename(path)} ({e.reason})")
            continue
        if skipped:
            notice(f"skipped checkpoints of {run_dir} that cannot be used: {_few(skipped)}")
        return checkpoint
    older = [os.path.basename(p) for p in reversed(older_checkpoints(run_dir))]
    if older:
        raise OlderCheckpoints(run_dir, older)
    if skipped:
        raise RunError(
            f"no checkpoint of {run_dir} can be used: {_few(skipped)}; restore one from a copy or start a new run"
        )
    return None


def _few(items: list[str]) -> str:
    return "; ".join(items[:3]) + (f"; and {len(items) - 3} more" if len(items) > 3 else "")


# -- writing -------------------------------------------------------------------------------
class CheckpointFolder:
    """Where a training session writes its checkpoints, keeping the newest `keep` good ones.

    A kept file's contents are never read again: the files this session wrote or checked are
    known by their identity (inode, size, modification time), and any other file by its header
    alone (bounded: tensorfile.py), checked against `expect` (run id, step, shapes).
    """

    def __init__(self, run_dir: str, expect: Expected, keep: int):
        self.run_dir, self.expect, self.keep = run_dir, expect, keep
        self.folder = os.path.join(run_dir, "checkpoints")
        self.known: dict[str, tuple] = {}  # path -> identity of a file whose header passed

    def write(self, checkpoint: Checkpoint) -> str:
        """Write `checkpoint` atomically, then rotate. It is validated first, so no file is written
        that a load would refuse. A file already at its name is replaced only if it is this run's
        checkpoint of the same step; anything else there is set aside first."""
        try:
            tensors, metadata = encoded(checkpoint, self.expect)
        except (Invalid, Malformed) as e:  # a bug of the code that built the checkpoint, not of the user's files
            raise RuntimeError(f"the checkpoint of step {checkpoint.step} breaks the checkpoint format: {e}") from None
        try:
            os.mkdir(self.folder)
        except FileExistsError:
            pass
        except FileNotFoundError:  # never re-create a run directory that was moved or deleted
            raise RunError(f"the run directory {self.run_dir} is gone; no checkpoint can be written") from None
        remove_stale_temporaries(self.folder)
        path = checkpoint_path(self.run_dir, checkpoint.step)
        if os.path.lexists(path) and (problem := self._problem(path)):
            notice(f"set aside {path} as {os.path.basename(set_aside(path))}: it {problem}")
        atomic_write(path, lambda f: write(f, tensors, metadata))
        self.known[path] = _identity(path)
        self._rotate(path)
        return path

    def _problem(self, path: str) -> str | None:
        """Why the file at `path` is no good checkpoint of this run, by its header; None if it is."""
        if self.known.get(path, ()) == _identity(path):
            return None
        problem = problem_of(path, self.expect)
        if problem is None:
            self.known[path] = _identity(path)
        return problem

    def _rotate(self, new: str) -> None:
        """Keep the newest `keep` good checkpoints, delete older good ones, set aside the others."""
        good = 0
        for path in reversed(list_checkpoints(self.run_dir)):
            if path != new and (problem := self._problem(path)):
                notice(f"set aside {path} as {os.path.basename(set_aside(path))}: it {problem}")
                continue
            good += 1
            if good > self.keep:
                os.remove(path)
                self.known.pop(path, None)


def encoded(checkpoint: Checkpoint, expect: Expected, named_step: int | None = None) -> tuple[dict, dict]:
    """(tensors, metadata) of the file of `checkpoint`, validated as a load validates the file:
    Invalid or Malformed otherwise. `named_step`: the step its file name will say."""
    tensors, metadata = encode(checkpoint)
    entries = {name: Entry(t.dtype, tuple(t.shape), 0, 0) for name, t in tensors.items()}
    validate(Header(entries, metadata), expect, checkpoint.step if named_step is None else named_step)
    for name, tensor in tensors.items():
        check_values(name, tensor)
    return tensors, metadata


def problem_of(path: str, expect: Expected) -> str | None:
    """Why the file at `path` is no checkpoint of `expect`'s run, by its header alone; None if it is."""
    named = CHECKPOINT_RE.fullmatch(os.path.basename(path))
    try:
        with open_regular(path, "checkpoint") as f:
            validate(read_header(f, os.fstat(f.fileno()).st_size), expect, int(named[1]) if named else None)
    except NotARegularFile as e:
        return e.reason.split(";")[0]
    except (Malformed, Invalid) as e:
        return _refused(path, e).reason
    except OSError as e:
        return f"cannot be opened ({e.strerror})"
    return None


def _identity(path: str) -> tuple | None:
    try:
        s = os.lstat(path)
    except FileNotFoundError:
        return None
    return (s.st_ino, s.st_size, s.st_mtime_ns) if stat.S_ISREG(s.st_mode) else None


def remove_stale_temporaries(folder: str) -> None:
    """Temporary files of a writer that was killed would otherwise pile up, each a full checkpoint."""
    for name in os.listdir(folder):
        if ".tmp-" not in name:
            continue
        stale = os.path.join(folder, name)
        try:
            if not stat.S_ISDIR(os.lstat(stale).st_mode):  # a folder is nothing a writer left
                os.remove(stale)
        except FileNotFoundError:
            pass


def set_aside(path: str) -> str:
    """Rename `path` to `path.unreadable`, or `.unreadable-2`, -3, ... if that name is taken;
    never over an existing file. Returns the new name."""
    for n in range(1, 10_000):
        target = path + SET_ASIDE + (f"-{n}" if n > 1 else "")
        if os.path.lexists(target):
            continue
        try:
            # link + unlink fails if the target appeared meanwhile, where rename would replace it.
            os.link(path, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError:  # a folder, or a filesystem without hard links
            os.rename(path, target)
            return target
        os.remove(path)
        return target
    raise RunError(f"cannot set aside {path}: {path}{SET_ASIDE} and 9,998 numbered names are taken; clear them")
