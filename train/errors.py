"""The exceptions of training and of run directories; every message names the fix."""


class RunError(ValueError):
    """A run directory or checkpoint that cannot be used."""


class TrainingDiverged(RuntimeError):
    """The ELBO or the weights became NaN/inf; the message names the step and the checkpoint kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says how to continue the run."""

    exit_code = 130


class TrainingTerminated(TrainingInterrupted):
    """SIGTERM during training: stopped like Ctrl-C, after a checkpoint; run.py exits 143 (128 + 15)."""

    exit_code = 143
