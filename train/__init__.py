"""Fitting runs and saving them.

Run         one run and its one owner (run.py): configs, names, id, directory, checkpoints, lock;
            a trained run's model and what it computes (inference.py, evaluation.py)
fit         train a new run; resume: continue one (fit.py)
Session     what both drivers share (session.py), with a RunBook of counters (book.py) and hooks
            at each epoch's end (hooks.py); the drivers: loop.py (one device), lightning.py (DDP)
checkpoints the checkpoint format, both ways, and its files (checkpoints.py)
"""

from .config import LaunchConfig, TrainConfig, resolve_device
from .elbo import make_elbo
from .fit import fit, new_trainer, resume
from .run import Run, load_run

__all__ = [
    "LaunchConfig",
    "Run",
    "TrainConfig",
    "fit",
    "load_run",
    "make_elbo",
    "new_trainer",
    "resolve_device",
    "resume",
]
