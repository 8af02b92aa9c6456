"""A run and what it holds: the room every command that opens a run directory reads from.

Run          one run and its one owner (run.py): configs, names, id, directory, lock; a trained
             run's model and what it computes (inference.py, evaluation.py, diagnostics.py)
load_run     the trained run in a directory
TrainConfig  how a run is trained, LaunchConfig how it is launched (config.py)
checkpoint   the checkpoint format behind one door, both ways, and its files (checkpoint/);
             upgrade_run converts a run's checkpoints of the older, pickled format, once

Nothing here trains: train/ imports this package, never the reverse, so opening a trained run
loads no training loop.
"""

from .config import LaunchConfig, Levers, TrainConfig, resolve_device
from .run import Run, load_run

__all__ = ["LaunchConfig", "Levers", "Run", "TrainConfig", "load_run", "resolve_device", "upgrade_run"]


def upgrade_run(run):
    """Convert the checkpoints of the older, pickled format of `run` (a Run or its directory) once;
    what was done, an `Upgraded` (trained/checkpoint/upgrade.py).

    Imported here on call: the only reader of pickles is loaded by the one command that asks for it.
    """
    from .checkpoint.upgrade import upgrade_run as upgrade

    return upgrade(run)
