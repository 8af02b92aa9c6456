"""Fitting runs and saving them: one training core (`core`) under two drivers (`loop` on one
device, `lightning` across processes), checkpoint files, run directories and `load_run`."""

from ..errors import RunError, TrainingDiverged, TrainingInterrupted
from ..guide import build
from .config import LaunchConfig, TrainConfig
from .core import RunBook, setup_run
from .elbo import make_elbo
from .loop import Trainer, resume, train
from .rundir import LoadedRun, load_run

__all__ = [
    "LaunchConfig",
    "LoadedRun",
    "RunBook",
    "RunError",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "build",
    "load_run",
    "make_elbo",
    "resume",
    "setup_run",
    "train",
]
