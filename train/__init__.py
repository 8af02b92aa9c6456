"""Fitting runs and saving them: the SVI loop, run directories, checkpoints, `load_run`."""

from train.config import TrainConfig
from train.loop import Trainer, TrainingDiverged, TrainingInterrupted, evaluate, make_elbo, resume, train
from train.runs import RunError, build, load_run

__all__ = [
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "evaluate",
    "make_elbo",
    "resume",
    "train",
    "RunError",
    "build",
    "load_run",
]
