"""The lock of a run cannot be taken from its holder (issue 22, defect 4), and works or is
refused in one line where fcntl does not exist (issue 20, item 9)."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT, run_python
from ugvae.errors import NotWritable, RunLocked
from ugvae.trained.lock import run_lock

HOLD = textwrap.dedent("""
    import sys, time
    {setup}
    from ugvae.trained.lock import run_lock
    with run_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")
TRY = """
import sys
{setup}
from ugvae.errors import NotWritable, RunLocked
from ugvae.trained.lock import run_lock
try:
    with run_lock(sys.argv[1]):
        print("GOT THE LOCK")
except RunLocked as e:
    print("REFUSED", e)
"""
# fcntl and msvcrt both missing: the lock module is imported again without them.
NO_LOCKS = """
import importlib
import ugvae.trained.lock  # torch and the rest import fcntl themselves: only the lock goes without
fcntl = sys.modules["fcntl"]
sys.modules["fcntl"] = None
sys.modules["msvcrt"] = None
importlib.reload(ugvae.trained.lock)
sys.modules["fcntl"] = fcntl
"""
# Windows simulated: no fcntl, and an msvcrt whose locking() is a POSIX record lock, which
# (like Windows' byte locks) one process holds against every other.
FAKE_MSVCRT = """
import errno, fcntl, os, types, importlib
msvcrt = types.SimpleNamespace(LK_UNLCK=0, LK_NBLCK=2)
def locking(fd, mode, nbytes):
    start = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_UN if mode == 0 else fcntl.LOCK_EX | fcntl.LOCK_NB, nbytes, start, os.SEEK_SET)
    except BlockingIOError:
        raise OSError(errno.EACCES, "Permission denied")
msvcrt.locking = locking
import ugvae.trained.lock
sys.modules["msvcrt"] = msvcrt
sys.modules["fcntl"] = None
importlib.reload(ugvae.trained.lock)
sys.modules["fcntl"] = fcntl
"""

# A filesystem that cannot flock a directory (some network filesystems): the note is locked.
NO_DIRECTORY_LOCKS = """
import errno, fcntl, os, stat, types
import ugvae.trained.lock
def flock(fd, op):
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        raise OSError(errno.EBADF, "Bad file descriptor")
    return fcntl.flock(fd, op)
ugvae.trained.lock.fcntl = types.SimpleNamespace(flock=flock, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB)
"""


def hold(run_dir, setup=""):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(setup=setup), run_dir],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "locked\n", proc.stderr.read()
    return proc


@pytest.fixture
def stop():
    procs = []
    yield procs.append
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_removing_the_note_never_lets_a_second_writer_in(run_copy, stop):
    """Defect 4: on main, `rm RUN/.lock` while a run trained let a second one lock a new file."""
    holder = hold(run_copy)
    stop(holder)
    os.remove(os.path.join(run_copy, ".lock"))
    second = run_python(TRY.format(setup=""), run_copy)
    assert second.stdout.startswith("REFUSED") and "is in use by process" in second.stdout, second.stderr
    with pytest.raises(RunLocked):
        with run_lock(run_copy):
            pass


@pytest.mark.slow
def test_moving_the_run_moves_its_lock(run_copy, stop, tmp_path):
    """Defect 4: the lock is on the directory itself, so a renamed run stays locked."""
    holder = hold(run_copy)
    stop(holder)
    moved = str(tmp_path / "moved")
    os.rename(run_copy, moved)
    assert run_python(TRY.format(setup=""), moved).stdout.startswith("REFUSED")


def test_the_note_names_the_holder_and_goes_with_it(run_copy, stop):
    """Defect 8 (the lock part): the note is removed at release, so no stale PID is left."""
    holder = hold(run_copy)
    stop(holder)
    assert open(os.path.join(run_copy, ".lock")).read() == str(holder.pid)
    holder.kill(), holder.wait()
    with run_lock(run_copy):
        assert open(os.path.join(run_copy, ".lock")).read() == str(os.getpid())
    assert not os.path.exists(os.path.join(run_copy, ".lock"))


def test_without_fcntl_or_msvcrt_the_lock_is_refused_in_one_line(run_copy):
    """Issue 20 item 9: no ImportError at import; a clear RunError when a run is locked."""
    code = "import sys\n" + NO_LOCKS + TRY.format(setup="").replace("except RunLocked", "except Exception")
    proc = run_python(code, run_copy)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "neither fcntl nor msvcrt file locks" in proc.stdout and proc.stdout.count("\n") == 1


@pytest.mark.slow
def test_with_msvcrt_only_one_process_holds_the_lock(run_copy, stop):
    """Issue 20 item 9: the msvcrt path (simulated with POSIX record locks) refuses a second writer."""
    holder = hold(run_copy, setup="import sys\n" + FAKE_MSVCRT)
    stop(holder)
    second = run_python("import sys\n" + FAKE_MSVCRT + TRY.format(setup=""), run_copy)
    assert second.stdout.startswith("REFUSED") and f"process {holder.pid}" in second.stdout, second.stderr
    holder.kill(), holder.wait()
    again = run_python("import sys\n" + FAKE_MSVCRT + TRY.format(setup=""), run_copy)
    assert again.stdout.startswith("GOT THE LOCK"), again.stderr


@pytest.mark.slow
def test_where_directories_cannot_be_locked_the_note_is(run_copy, stop):
    """Defect 4 (fallback): without directory flocks the note file itself is the lock."""
    holder = hold(run_copy, setup="import sys\n" + NO_DIRECTORY_LOCKS)
    stop(holder)
    second = run_python("import sys\n" + NO_DIRECTORY_LOCKS + TRY.format(setup=""), run_copy)
    assert second.stdout.startswith("REFUSED") and f"process {holder.pid}" in second.stdout, second.stderr


def test_a_read_only_run_is_refused_by_the_lock_in_one_error(small_run, tiny_disk):
    """Defect 8 (the lock part) asked that a read-only run never crash the lock; issue 29 (D4)
    asks more: only writers lock, so the lock is where a run that cannot be written is refused,
    before any work, as NotWritable (tests/security/test_read_only_runs.py has the commands)."""
    run_dir = shutil.copytree(small_run, str(tiny_disk / "run"))
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    with pytest.raises(NotWritable, match="its filesystem is read-only"):
        with run_lock(run_dir):
            pass
    assert not os.path.exists(os.path.join(run_dir, ".lock"))
