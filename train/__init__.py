"""Fitting runs and saving them: one training core (`core`) under two drivers (`loop` on one
device, `lightning` across processes), checkpoint files, run directories and `load_run`."""

from guide import build
from train.config import LaunchConfig, TrainConfig
from train.core import RunBook, setup_run
from train.elbo import make_elbo
from train.errors import RunError, TrainingDiverged, TrainingInterrupted
from train.loop import Trainer, resume, train
from train.rundir import LoadedRun, load_run

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
