"""RUN/tensorboard/: the run's numbers and end-of-training images as TensorBoard events.

`summary_writer(log_dir)` opens `Events` there when the optional extra `ugvae[tensorboard]` is
installed, and None otherwise or when the folder cannot be written to (training goes on
without it). Training writes scalars through it (train/hooks.py), the end-of-training report
its figures (experiments/report.py).

The events are a view of metrics.csv, so a failure to write them never stops a command, except
a full disk, which is a DiskFull as for every other file of a run (the next checkpoint would
fail too). Any other failure is one warning, after which the events stop; a run moved or
deleted while it trains is the session's to report, so it gets none.

tensorboard writes from a thread of its own. When a write fails there, the thread keeps the
error for the writer to raise at its next call, in the caller's thread, where `Events` handles
it, and then raises it once more, which Python would print as a bare traceback:
`report_writer_errors_once` drops that second report (threading.excepthook, for tensorboard's
threads only, and only for an error the writer raises again).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading

from ..files import disk_full, printable_name

logger = logging.getLogger(__name__)


class Events:
    """A SummaryWriter whose failures are handled as the module docstring says."""

    def __init__(self, writer):
        self.writer = writer
        self.log_dir = writer.log_dir

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._call("add_scalar", tag, value, step)

    def add_image(self, tag: str, image, step: int) -> None:
        self._call("add_image", tag, image, step)

    def close(self) -> None:
        """Flush and close; the events of a session that stops early are flushed too. Never raises:
        it runs while a session stops, whose own error or signal must be the one reported."""
        self._call("close", full_disk_stops=False)
        self.writer = None

    def _call(self, method: str, *args, full_disk_stops: bool = True) -> None:
        if self.writer is None:
            return
        try:
            getattr(self.writer, method)(*args)
        except OSError as e:
            writer, self.writer = self.writer, None
            with contextlib.suppress(OSError):
                writer.close()
            if full_disk_stops and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(self.log_dir, os.path.dirname(self.log_dir) or ".") from None
            if os.path.isdir(self.log_dir):
                logger.warning(
                    f"TensorBoard events can no longer be written to {printable_name(self.log_dir)} "
                    f"({e.strerror}); metrics.csv has every number"
                )


def summary_writer(log_dir: str) -> Events | None:
    """`Events` writing into `log_dir`, or None where TensorBoard is not installed or the folder
    cannot be written to (with a warning). Raises DiskFull on a full disk."""
    if os.path.islink(log_dir):  # a run's files are never written through a link out of it
        logger.warning(f"{log_dir} is a symbolic link; TensorBoard events are not written through it")
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the optional extra `ugvae[tensorboard]`
        return None
    report_writer_errors_once()
    try:
        return Events(SummaryWriter(log_dir=log_dir))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(log_dir, os.path.dirname(log_dir) or ".") from None
        logger.warning(f"TensorBoard events cannot be written to {log_dir} ({e.strerror}); training goes on without")
        return None
    except UnicodeEncodeError:  # tensorboard encodes paths as UTF-8: a Latin-1 folder name fails
        where = printable_name(log_dir)
        logger.warning(f"TensorBoard cannot write to {where}, a path that is not UTF-8; training goes on without")
        return None


def report_writer_errors_once() -> None:
    """Install, once per process, the excepthook that drops the second report of a writer
    thread's error (module docstring); every other thread's errors reach the previous hook."""
    previous = threading.excepthook
    if getattr(previous, "drops_tensorboard_reraise", False):
        return

    def hook(args):
        thread = args.thread
        raised_again = getattr(thread, "exception", None) is args.exc_value
        if not (raised_again and type(thread).__module__.startswith("tensorboard.")):
            previous(args)

    hook.drops_tensorboard_reraise = True
    threading.excepthook = hook
