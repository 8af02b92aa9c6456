"""RUN/tensorboard/: the run's numbers and end-of-training images as TensorBoard events.

`summary_writer(log_dir)` opens a SummaryWriter there when the optional extra
`ugvae[tensorboard]` is installed, and None otherwise or when the folder cannot be written to
(training goes on without it); a full disk is a DiskFull, as for every other file of a run.
Training writes scalars through it (train/hooks.py), the end-of-training report its figures
(experiments/report.py).
"""

from __future__ import annotations

import errno
import logging
import os

from ..files import disk_full, printable_name

logger = logging.getLogger(__name__)


def summary_writer(log_dir: str):
    if os.path.islink(log_dir):  # a run's files are never written through a link out of it
        logger.warning(f"{log_dir} is a symbolic link; TensorBoard events are not written through it")
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the optional extra `ugvae[tensorboard]`
        return None
    try:
        return SummaryWriter(log_dir=log_dir)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(log_dir, os.path.dirname(log_dir) or ".") from None
        logger.warning(f"TensorBoard events cannot be written to {log_dir} ({e.strerror}); training goes on without")
        return None
    except UnicodeEncodeError:  # tensorboard encodes paths as UTF-8: a Latin-1 folder name fails
        where = printable_name(log_dir)
        logger.warning(f"TensorBoard cannot write to {where}, a path that is not UTF-8; training goes on without")
        return None
