"""The folders commands write into: new, whole or absent, and never reached through a link.

A command's output folder appears all at once. Its files are written into a temporary folder
beside the final place, `.NAME.tmp-PID-RANDOM`, which is renamed to a new NAME, NAME-2, NAME-3,
... (one past the highest number taken, so the highest is the newest) once every file is in it.
A command that fails removes its temporary folder; one that is killed leaves it to
`sweep_temporaries`, which the next command that writes into the run calls under the run's lock
(trained/run.py `Run.lock`), together with the temporary files of killed atomic writers
(files.py: `eval.json.tmp-PID-RANDOM`). Nothing already there is overwritten: a folder the user
names (`out`) must be absent or empty.

Inside a run the folders on the way (experiments/, embed/, samples/) must be real folders: a
symbolic link planted there is refused, so no command writes or replaces files outside the run
through it.

    new_output_dir(parent, name)    a new, empty parent/name[-n] (a run directory, which training fills over time)
    claim_dir(path)                 `path`, new; refused if it exists (a named run directory)
    check_output_dir(path)          refuse, before any work, an `out` that is a file or holds files
    OutputFolder(parent, name)      a command's folder, written whole (the context manager above)
    latest_output(parent, name)     the newest parent/name[-n], or None
    sweep_temporaries(run_dir)      what killed writers left in a run
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat

from ..errors import RunError
from ..files import check_writable, make_dirs

# Names of temporaries: files.py's `NAME.tmp-PID-RANDOM`, and this module's `.NAME.tmp-PID-RANDOM` folders.
TEMPORARY = re.compile(r"\.tmp-(\d+)-[0-9a-f]{8}$")
# The folders of a run that commands create outputs in, each holding one folder per output.
OUTPUT_PARENTS = ("experiments", "embed", "samples")


def check_output_parent(parent: str) -> None:
    """Refuse, before any work, a `parent` of outputs that is no folder (a file, or a link to one)."""
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise RunError(f"{parent} is a file where a folder of outputs belongs; move it aside")


def numbered(parent: str, name: str) -> list[tuple[int, str]]:
    """(n, path) of parent/name (n = 1) and parent/name-n, sorted by n."""
    pattern = re.compile(re.escape(name) + r"(?:-(\d+))?")
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.listdir(parent):
            match = pattern.fullmatch(entry)
            if match:
                found.append((int(match[1] or 1), os.path.join(parent, entry)))
    return sorted(found)


def new_output_dir(parent: str, name: str) -> str:
    """A new, empty `parent/name`, or `parent/name-n` one past the highest taken: nothing is overwritten."""
    check_output_parent(parent)
    make_dirs(parent)
    n = max((n for n, _ in numbered(parent, name)), default=0)
    while True:
        n += 1
        path = os.path.join(parent, name if n == 1 else f"{name}-{n}")
        try:
            make_dirs(path, exist_ok=False)
            return path
        except FileExistsError:  # another command took it since the listing
            continue


def latest_output(parent: str, name: str) -> str | None:
    """The newest output folder `parent/name[-n]` (the highest n), or None."""
    folders = [path for _, path in numbered(parent, name) if os.path.isdir(path) and not os.path.islink(path)]
    return folders[-1] if folders else None


def claim_dir(path: str) -> str:
    """Create the directory `path`, refusing one that exists so that no run is overwritten."""
    try:
        make_dirs(path, exist_ok=False)
    except FileExistsError:
        raise RunError(
            f"run directory {path} already exists and runs are never overwritten; pick another `run_dir`, "
            "or continue that run with `resume`"
        ) from None
    return path


def check_output_dir(path: str) -> None:
    """Refuse an `out` folder that is a file or already holds files, before any work."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise RunError(f"`out` {path} is a file, not a folder; pick another `out`")
    if os.path.isdir(path) and os.listdir(path):
        raise RunError(f"`out` {path} already holds files and outputs are never overwritten; pick another `out`")


def check_inside(run_dir: str, folder: str) -> None:
    """Refuse a `folder` under `run_dir` reached through a symbolic link (or a file) on the way."""
    relative = os.path.relpath(folder, run_dir)
    if relative.startswith(os.pardir):
        return  # not inside the run: the user's own folder
    path = run_dir
    for part in relative.split(os.sep) if relative != os.curdir else []:
        path = os.path.join(path, part)
        if not os.path.lexists(path):
            return
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise RunError(
                f"{path} is a symbolic link; outputs are never written through a link out of the run: "
                "replace it with a folder"
            )
        if not stat.S_ISDIR(mode):
            raise RunError(f"{path} is a file where a folder of outputs belongs; move it aside")


class OutputFolder:
    """A command's output folder, written whole: files go into a temporary folder (`path` during
    the block, `file(name)` a path in it), renamed at the end to a new `parent/name[-n]`, or to
    `out` when given; on failure the temporary folder is removed. After the block, `path` is the
    final folder and `files` the final paths of every `file(name)` asked for, in order.

    `run_dir`: the run the folder lies in, whose folders on the way must not be links."""

    def __init__(self, parent: str, name: str, out: str | None = None, run_dir: str | None = None):
        if out is not None and os.path.islink(out):
            out = os.path.realpath(out)  # a rename cannot replace a link by a folder: write where it points
        self.parent, self.name, self.out, self.run_dir = parent, safe_name(name), out, run_dir
        self.path: str | None = None
        self._names: list[str] = []
        self.check()

    def check(self) -> None:
        """The refusals of a bad place, before the command does any work."""
        if self.out is not None:
            check_output_dir(self.out)
            if self.run_dir is not None:
                check_inside(self.run_dir, os.path.abspath(self.out))
            check_writable(self.out)
        else:
            check_output_parent(self.parent)
            if self.run_dir is not None:
                check_inside(self.run_dir, self.parent)
            check_writable(self.parent)

    def file(self, name: str) -> str:
        if name not in self._names:
            self._names.append(name)
        return os.path.join(self.path, name)

    @property
    def files(self) -> list[str]:
        return [os.path.join(self.path, name) for name in self._names]

    def __enter__(self) -> OutputFolder:
        self.check()
        beside = os.path.dirname(os.path.abspath(self.out)) if self.out is not None else self.parent
        make_dirs(beside)
        stem = os.path.basename(os.path.normpath(self.out)) if self.out is not None else self.name
        while True:
            path = os.path.join(beside, f".{stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
            try:
                make_dirs(path, exist_ok=False)
                break
            except FileExistsError:
                continue
        self.path = path
        return self

    def __exit__(self, kind, error, traceback) -> None:
        temporary = self.path
        if kind is not None:
            shutil.rmtree(temporary, ignore_errors=True)
            return
        try:
            final = self.out if self.out is not None else new_output_dir(self.parent, self.name)
            check_output_dir(final)  # an empty folder is replaced by the rename; one with files never
            os.rename(temporary, final)  # atomic: replaces the empty folder reserved (or `out`), or creates it
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        self.path = final


def safe_name(name: str) -> str:
    """A folder name from `name` (a set folder's name, a dataset): no separators, dots or odd characters."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name).lstrip(".") or "output"


def writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_temporaries(run_dir: str) -> list[str]:
    """Remove the temporaries of killed writers in `run_dir` (its top level, and the output folders
    of OUTPUT_PARENTS and their entries); returns what was removed. Links are removed, never followed."""
    removed = []
    folders = [run_dir]
    for parent in OUTPUT_PARENTS:
        path = os.path.join(run_dir, parent)
        if is_real_dir(path):
            folders.append(path)
            folders += [p for p in (os.path.join(path, e) for e in sorted(os.listdir(path))) if is_real_dir(p)]
    for folder in folders:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.listdir(folder):
                match = TEMPORARY.search(entry)
                if not match or writer_alive(int(match[1])):
                    continue
                path = os.path.join(folder, entry)
                with contextlib.suppress(FileNotFoundError):
                    if is_real_dir(path):
                        shutil.rmtree(path)
                    else:
                        os.remove(path)
                    removed.append(path)
    return removed


def is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
