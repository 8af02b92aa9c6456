"""Every error ugvae raises on purpose, under one base class, `UGVAEError`.

A message names the problem and its fix in terms of the library: fields and values
(`group_size`, `var_x`), never command-line flags. Field names stand in backticks, so that the
command line (run.py) can show each as its flag (`group_size` -> --group-size). The command
line turns a UGVAEError into one line and exit code 2; any other exception is a bug and keeps
its traceback.

The classes also derive from the built-in type a caller would expect (ValueError for bad
values, OSError for a full disk), so `except ValueError` keeps working.
"""

from __future__ import annotations


class UGVAEError(Exception):
    """Base of every error ugvae raises on purpose."""


class ConfigError(UGVAEError, ValueError):
    """A field of a config or of a command's settings holds a value that cannot be used."""


class UnknownName(ConfigError):
    """A model, guide or dataset name that is not registered; the message lists the choices."""


class GuideUnavailable(UnknownName):
    """A guide name that neither ugvae, nor this process, nor an installed package provides (or
    whose package fails to load); the message names the guide and how to provide it."""


class GuideContractError(UGVAEError, ValueError):
    """A guide that breaks the contract of guide/base.py; `problems` holds one line per fault, each
    naming the site or method and the fix (guide/check.py)."""

    def __init__(self, guide: str, problems: list[str]):
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{guide} breaks the guide contract ({len(problems)} problem(s)):\n{lines}")
        self.problems = problems


class DataError(UGVAEError, ValueError):
    """Data that cannot be read or used: a missing dataset, a corrupt file, images of the wrong shape."""


class RunError(UGVAEError, ValueError):
    """A run directory, or something in it, that cannot be used as asked."""


class CheckpointError(RunError):
    """A file in checkpoints/ that is not a usable checkpoint of this run; `reason` says why."""

    def __init__(self, path: str, reason: str, fix: str = "delete it to fall back to the previous one"):
        super().__init__(f"checkpoint {path} {reason}; {fix}")
        self.path, self.reason = path, reason


class RunLocked(RunError):
    """Another process is writing into the run directory."""


class MissingPackage(UGVAEError, ImportError):
    """An optional package that a feature needs is not installed; the message says how to install it."""


class DiskFull(UGVAEError, OSError):
    """A file could not be written for lack of space; the older version of it is intact."""


class NotWritable(UGVAEError, OSError):
    """A file or folder that cannot be written: a read-only filesystem, or no permission."""


class ProcessLost(UGVAEError, RuntimeError):
    """A process of a multi-process (DDP) run ended mid-training; the message names the checkpoint kept."""


class TrainingDiverged(UGVAEError, RuntimeError):
    """The ELBO or the weights became NaN/inf; the message names the step and the checkpoint kept."""


class UnsupportedStructure(UGVAEError, ValueError):
    """A model/guide pair outside what the sync-free ELBO assembles; the message names the site."""


class GraphNeedsCUDA(ConfigError):
    """A captured (CUDA graph) step asked for off a GPU."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after a checkpoint; the message says how to continue the run."""

    exit_code = 130


class TrainingTerminated(TrainingInterrupted):
    """SIGTERM or SIGHUP during training: stopped like Ctrl-C, after a checkpoint; the exit code
    is the shell's for the signal, 128 + its number (143 for SIGTERM, 129 for SIGHUP)."""

    exit_code = 143

    def __init__(self, message: str, signum: int = 15):
        super().__init__(message)
        self.exit_code = 128 + signum
