"""One training session of a run, built the same way under both drivers.

The objective is eq. 10 summed over the groups of a step, minimised by a fused `torch.optim.Adam`
(`adam`) over the enumerated ELBO used as a module (`train.elbo.elbo_module`). Two thin drivers own the loop:
`train.loop.Trainer` on one device and `train.lightning` under PyTorch Lightning (DDP). Both
build a `Session` and call it at the same points:

    session.step(run_step)     a step under the run's validation setting; divergence named
    session.begin()            record the session's environment and data (environment.json)
    session.after_step()       log the window when due (hooks.on_log), checkpoint when due
    session.end_epoch()        the epoch's hooks (cluster refresh, metrics.csv, TensorBoard;
                               test metrics and beta diagnostics every `eval_every` epochs and
                               at the last), then, at an evaluated epoch, a checkpoint
    session.finish()           summary.json

A checkpoint holds everything a step depends on (trained/checkpoint/payload.py), so on one
process a resumed run repeats the losses of an uninterrupted one exactly. A resume keeps the live
optimiser's hyper-parameters, built from the run's config (its record of how it trains, which
`--resume` checks and the user can read), and takes only the per-parameter state from the
checkpoint: a planted file cannot change the learning rate. Under DDP every process keeps a
session; `reduce` sums the losses over processes and only the writer (rank 0) writes the run
directory.

The writer holds the run directory open while it trains and checks, before each write, that the
path still names it: a run moved meanwhile stops after a checkpoint written in its new place
(TrainingInterrupted naming it), a deleted one stops at once with one line, and neither leaves a
stray directory at the old path.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch

from ..data import ImageSet, load_dataset, own_groups, tensor_data, training_groups
from ..data.tensors import names_tensors
from ..errors import ConfigError, DataError, RunError, TrainingDiverged, TrainingInterrupted, TrainingTerminated
from ..files import write_json
from ..model import ModelConfig
from ..trained.checkpoint import MAX_WEIGHT, Checkpoint, CheckpointFolder, expect, rng_state, set_rng_state
from ..trained.diagnostics import inactive_beta_message
from ..trained.environment import content_hashes, record_session, session_record
from ..trained.evaluation import test_partition
from .book import RunBook
from .hooks import epoch_hooks

logger = logging.getLogger(__name__)

# torch.distributions' validation message for a parameter outside its constraint.
INVALID_PARAMETER_RE = re.compile(r"Expected parameter (\w+) .*? of distribution (\w+).*found invalid values", re.S)


@dataclass
class TrainingData:
    train_set: ImageSet
    test_set: ImageSet
    test_parts: list[torch.Tensor]  # the test groups of trained/evaluation.py
    diagnostic_groups: torch.Tensor  # beta is read on groups that share something, where the data has them


def load_training_data(train_cfg, train_data=None, test_data=None, run_dir: str | None = None) -> TrainingData:
    """The data of a run: its dataset by name, or, for a run of in-memory tensors (`dataset`
    tensors:HASH, data/tensors.py), `train_data` and `test_data` given again, which must be the
    tensors it was trained on (`run_dir` names the run in the refusal). Notices are logged."""
    named_tensors = names_tensors(train_cfg.dataset)
    if train_data is None:
        if test_data is not None:
            raise ConfigError("`test_data` comes with `train_data`; pass both, or neither")
        if named_tensors:
            raise DataError(
                f"{run_dir or 'this run'} was trained on in-memory tensors ({train_cfg.dataset}), which no file "
                f"holds; pass them again: ugvae.resume({run_dir or 'RUN'!r}, train_data=..., test_data=...)"
            )
        train_set = load_dataset(train_cfg.dataset, "train", train_cfg.data_dir, train_cfg.image_size)
        test_set = load_dataset(train_cfg.dataset, "test", train_cfg.data_dir, train_cfg.image_size)
        if train_set.notice:
            logger.warning(train_set.notice)
        return training_data(train_cfg, train_set, test_set)
    if not named_tensors:
        raise ConfigError(
            f"{run_dir or 'this run'} trains on dataset {train_cfg.dataset}, not on in-memory tensors; "
            "drop `train_data` and `test_data`"
        )
    tensors = tensor_data(train_data, test_data, train_cfg.image_size)
    if tensors.name != train_cfg.dataset:
        raise DataError(tensors_differ(run_dir, train_cfg.dataset, tensors))
    return training_data(train_cfg, tensors.train, tensors.test)


def tensors_differ(run_dir: str | None, trained_on: str, given) -> str:
    """Which of `train_data` and `test_data` differs from the tensors the run was trained on, by
    the sha256 of each that environment.json recorded (`given`: a data.TensorData)."""
    train, test = content_hashes(run_dir) if run_dir else (None, None)
    run, fix = run_dir or "the run", "pass the same tensors, or train a new run on these with `fit`"
    if train and test and (train == test) != given.held_out:
        if given.held_out:
            return f"{run} was trained with `test_data` besides `train_data`; pass it again"
        return f"{run} held its test split out of `train_data` and was given no `test_data`; drop `test_data`"
    for field, then, now in (("train_data", train, given.train), ("test_data", test, given.test)):
        if then and then != now.content_hash:
            hashes = f"sha256 {then[:12]}..., given {now.content_hash[:12]}..."
            return f"`{field}` differs from the tensors {run} was trained on ({hashes}); {fix}"
    return f"the tensors given are {given.name}, not the {trained_on} {run} was trained on; {fix}"


def training_data(train_cfg, train_set: ImageSet, test_set: ImageSet) -> TrainingData:
    """The splits of a run with the fixed groups its evaluation reads."""
    test_parts = test_partition(len(test_set), train_cfg.group_size)
    diagnostic_groups = own_groups(test_set, train_cfg.group_size)
    return TrainingData(
        train_set, test_set, test_parts, test_parts[0] if diagnostic_groups is None else diagnostic_groups
    )


def check_image_shape(data: TrainingData, model_cfg: ModelConfig, dataset: str) -> None:
    """A RunError unless the model takes images of the data's shape."""
    shape = tuple(data.train_set.x_shape)
    if model_cfg.x_shape != shape:
        raise RunError(
            f"the model expects images of shape {model_cfg.x_shape} but {dataset} has {shape}; set `image_size`, "
            "or build the model config from the data"
        )


def adam(parameters, cfg) -> torch.optim.Adam:
    """The optimiser of a run trained under `cfg` (a TrainConfig), the same under both drivers.

    Fused: one kernel updates every parameter, where the loop over the model's 36 small tensors
    took about a fifth of a default CPU step (2.6 ms against 0.9, bench/train_step.py); its
    numbers equal the unfused update's up to rounding, and a resumed run takes the same optimiser.
    Capturable where the step is a captured CUDA graph (its step count stays on the device).
    """
    return torch.optim.Adam(parameters, lr=cfg.lr, fused=True, capturable=cfg.graph)


class Session:
    """The pieces of one process's session and the steps both drivers take with them.

    `model`, `guide` and the images live on `device`; the driver sets `optimizer` (Lightning makes
    it in configure_optimizers) and `reduce` (a sum over processes under DDP).
    """

    def __init__(self, run, data: TrainingData, model, guide, device, world_size: int = 1, writer: bool = True):
        cfg = run.train_cfg
        self.run, self.cfg, self.data, self.model, self.guide = run, cfg, data, model, guide
        self.device, self.writer, self.world_size = torch.device(device), writer, world_size
        self.train_images = data.train_set.images.to(self.device)
        self.test_images = data.test_set.images.to(self.device) if writer else None
        self.sampler = training_groups(
            cfg.groups,
            data.train_set,
            cfg.group_size,
            cfg.groups_per_step * world_size,
            cfg.seed,
            self.device,
            cfg.mix,
            cfg.group_warmup,
        )
        samples = cfg.group_size * cfg.groups_per_step * world_size
        self.book = RunBook(
            cfg.epochs,
            self.sampler.steps_per_epoch,
            samples,
            cfg.log_every,
            cfg.checkpoint_every,
            cfg.evaluation_period,
        )
        self.optimizer: torch.optim.Optimizer | None = None
        self.reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.validate = cfg.validation_on(self.device.type)
        self.last_checkpoint_step: int | None = None
        self.hooks, self.hooks_open = [], False
        self.checkpoints: CheckpointFolder | None = None  # the writer's, from its first checkpoint
        self.run_dir_fd: int | None = None  # the writer's hold on the run directory (`check_run_dir`)

    def open_hooks(self) -> None:
        """The hooks of this process (once); they write into the run directory, which exists by now."""
        if self.hooks_open:
            return
        self.hooks_open = True
        self.hooks = epoch_hooks(
            writer=self.writer,
            model=self.model,
            guide=self.guide,
            sampler=self.sampler,
            train_images=self.train_images,
            test_images=self.test_images,
            test_parts=self.data.test_parts,
            diagnostic_groups=self.data.diagnostic_groups,
            metrics_path=self.run.path("metrics.csv") if self.writer else None,
            tensorboard_dir=self.run.path("tensorboard") if self.writer else None,
            warmup=self.cfg.group_warmup,
        )

    def begin(self) -> None:
        """The first step is next (of a new run, or after `restore`): the writer records what this
        session runs on and reads (trained/environment.py). A session from step 0 drops what an
        earlier one stopped before its first checkpoint logged."""
        if self.writer:
            self.run_dir_fd = os.open(self.run.run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            if self.book.step == 0:
                for hook in self.hooks:
                    hook.on_restore(0)
            record = session_record(self.device, self.data.train_set, self.data.test_set, self.book.step)
            record_session(self.run.run_dir, record)

    def close(self) -> None:
        for hook in self.hooks:
            hook.close()
        if self.run_dir_fd is not None:
            os.close(self.run_dir_fd)
            self.run_dir_fd = None

    def check_run_dir(self) -> None:
        """Before the writer writes into the run: stop if its directory was moved (after a
        checkpoint in its new place: the hooks' paths stay the old ones) or deleted."""
        if self.run_dir_fd is None:
            return
        held = os.fstat(self.run_dir_fd)
        try:
            named = os.stat(self.run.run_dir)
            if (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
                return
        except FileNotFoundError:
            pass
        old, step = self.run.run_dir, self.book.step
        where = None if held.st_nlink == 0 else current_path(self.run_dir_fd)
        if where is None:
            os.close(self.run_dir_fd)
            self.run_dir_fd = None
            raise RunError(
                f"the run directory {old} was deleted while it trained (or moved where ugvae cannot name it); "
                f"training stopped at step {step}"
            )
        self.run.run_dir = where
        self.book.stop_clock()
        self.checkpoint()  # its window holds this step's loss: `restore` logs it first
        stopped = TrainingInterrupted(
            f"the run directory {old} was moved to {where} while it trained; training stopped at step {step} "
            f"after a checkpoint there"
        )
        stopped.run_dir = where
        raise stopped

    # -- steps ------------------------------------------------------------------------
    def seed(self, rank: int = 0) -> None:
        """The random stream of a new run's steps: the run's seed, plus the rank under DDP so that
        every process draws its own Monte Carlo noise. A resumed run takes its checkpoint's instead."""
        pyro.set_rng_seed(self.cfg.seed + rank)

    def step(self, run_step: Callable[[], torch.Tensor]) -> torch.Tensor:
        """`run_step()` under the run's validation setting; its loss is recorded in the book.

        With validation on, divergence shows up first as a distribution built from NaN/inf/zero
        scales rather than as a NaN loss: that ValueError becomes TrainingDiverged.
        """
        try:
            with pyro.validation_enabled(self.validate):
                loss = run_step()
        except ValueError as e:
            invalid = INVALID_PARAMETER_RE.search(str(e))
            if invalid is None:
                raise
            what = f"the {invalid[1]} of a {invalid[2]} distribution became invalid (NaN, inf or zero)"
            raise self.diverged(self.book.step + 1, what) from None
        self.book.record(loss)
        return loss

    def read_window(self) -> list[float]:
        """The losses not yet logged, summed over processes, checked finite."""
        losses = self.book.read_window(self.reduce)
        bad = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
        if bad is not None:
            # losses[-1] belongs to book.step, so losses[bad] to the step counted back from it.
            raise self.diverged(self.book.step - len(losses) + 1 + bad, f"the ELBO became {losses[bad]}")
        return losses

    def after_step(self) -> float | None:
        """Log the window when it is due, then checkpoint when that is due; the logged train ELBO."""
        book, train_elbo = self.book, None
        if book.log_due or book.checkpoint_due:
            self.check_run_dir()
        if book.log_due:
            train_elbo = self.log_window()
        if book.checkpoint_due:
            book.stop_clock()
            self.checkpoint()
            book.start_clock()
        return train_elbo

    def log_window(self) -> float | None:
        """Count the losses not yet logged into the epoch and log them (hooks.on_log); their train ELBO."""
        train_elbo = self.book.take_window(self.read_window())
        if train_elbo is not None:
            for hook in self.hooks:
                hook.on_log(self.book, train_elbo)
        return train_elbo

    def end_epoch(self) -> dict:
        """The epoch's hooks, in order, then the epoch's checkpoint where one is due; the epoch's numbers."""
        book = self.book
        book.stop_clock()
        self.check_run_dir()
        checkpoint = book.epoch_checkpoint_due
        result = {"train_elbo": book.epoch_train_elbo()}
        for hook in self.hooks:
            hook.on_epoch_end(book, result)
        book.next_epoch(result)
        if checkpoint:
            self.checkpoint()
        return result

    def checkpoint_at_stop(self) -> None:
        """The checkpoint a stopped session leaves: of this step, unless one was just written."""
        if self.last_checkpoint_step != self.book.step:
            self.checkpoint()

    def finish(self, **extra) -> dict:
        """summary.json of the session (on the writer), and one line if beta carries nothing."""
        book = self.book
        summary = {
            "steps": book.step,
            "epochs": book.epoch,
            "train_seconds": round(book.train_seconds, 2),
            "seconds_per_epoch": round(book.train_seconds / max(book.epoch, 1), 4),
            **extra,
            **book.last_result,
        }
        if self.writer:
            write_json(self.run.path("summary.json"), summary)
            if note := inactive_beta_message(summary, self.cfg, self.data.train_set.groups is not None):
                logger.warning(note)
        return summary

    # -- checkpoints ------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Every process checks that the state is worth falling back to; the writer saves it."""
        window = self.read_window()  # stays pending: the next log writes it
        parameters = [p.detach() for module in (self.model, self.guide) for p in module.parameters() if p.numel()]
        largest = float(torch.stack([p.abs().max() for p in parameters]).max())  # NaN if any is NaN
        if not math.isfinite(largest):
            raise self.diverged(self.book.step, "the weights became NaN/inf")
        if largest > MAX_WEIGHT:  # a checkpoint holding them would be refused as damaged
            raise self.diverged(self.book.step, f"weights grew beyond +-{MAX_WEIGHT:g}")
        if self.writer:
            self.folder().write(self.state(window))
        self.last_checkpoint_step = self.book.step

    def folder(self) -> CheckpointFolder:
        """The writer's checkpoints/ (made again for a run that moved)."""
        if self.checkpoints is None or self.checkpoints.run_dir != self.run.run_dir:
            train_samples = len(self.data.train_set)
            fits = expect(self.run, self.model, self.guide, training=True, train_samples=train_samples)
            self.checkpoints = CheckpointFolder(self.run.run_dir, fits, self.cfg.keep_checkpoints)
        return self.checkpoints

    def state(self, window: list[float]) -> Checkpoint:
        """This session's state, as a checkpoint of it holds it."""
        return Checkpoint(
            run_id=self.run.run_id,
            **self.book.state_dict(window),
            steps_per_epoch=self.book.steps_per_epoch,
            train_samples=len(self.data.train_set),
            config=self.run.config_payload(),
            model=self.model.state_dict(),
            guide=self.guide.state_dict(),
            # clusters:ALPHA groups of the epoch under way draw from these (data/sampling.py)
            assignments=self.sampler.state_dict().get("assignments"),
            optimizer=self.optimizer.state_dict(),
            rng=rng_state(),
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue from `checkpoint` (loaded for training, trained/run.py): weights, the optimiser's
        per-parameter state, RNG, counters, the losses not yet logged, the sampler's state; hooks
        drop what was logged after it."""
        run, book = self.run, self.book
        if checkpoint.steps_per_epoch not in (None, book.steps_per_epoch):
            trained_on = (checkpoint.config.get("lightning") or {}).get("world_size") or 1
            raise RunError(
                f"the checkpoint of {run.run_dir} was made with {checkpoint.steps_per_epoch} steps per epoch, but "
                f"this session has {book.steps_per_epoch} (the run trained on {trained_on} process(es) of "
                f"`groups_per_step` {self.cfg.groups_per_step}); resume it on {trained_on} process(es)"
            )
        self.model.load_state_dict(checkpoint.model)
        self.guide.load_state_dict(checkpoint.guide)
        # The live param groups hold the hyper-parameters of the run's config (module docstring).
        live_groups = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict({"state": checkpoint.optimizer["state"], "param_groups": live_groups})
        set_rng_state(checkpoint.rng)
        book.load_state_dict(checkpoint.book_state(), self.device, self.writer)
        assignments = checkpoint.assignments
        self.sampler.load_state_dict({} if assignments is None else {"assignments": assignments})
        self.last_checkpoint_step = book.step
        for hook in self.hooks:
            hook.on_restore(book.step)
        if book.log_due and book.pending:  # written before its step's log (a run that moved, `check_run_dir`)
            self.log_window()
        if self.writer:
            logger.info(f"resuming {run.run_dir} from step {book.step} (epoch {book.epoch + 1})")

    # -- how a session ends early -----------------------------------------------------
    def checkpoint_kept(self) -> str:
        if self.last_checkpoint_step is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint (step {self.last_checkpoint_step}) is kept in {self.run.run_dir}"

    def diverged(self, step: int, what: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"training diverged at step {step}: {what}; {self.checkpoint_kept()}. Likely causes: a learning rate "
            f"too high (try `lr` {self.cfg.lr / 10:g}), exploding gradients (try `clip_norm` 10) or a very small "
            "`var_x`"
        )

    def interrupted(self, signum: int | None = None) -> TrainingInterrupted:
        """The error a session stopped by Ctrl-C, or by the signal `signum`, ends with."""
        by = f" by {signal.Signals(signum).name}" if signum is not None else ""
        message = f"training stopped at step {self.book.step}{by}; {self.checkpoint_kept()}"
        if signum in (None, signal.SIGINT):
            stopped = TrainingInterrupted(message)
        else:  # the exit code follows the signal (TrainingTerminated)
            stopped = TrainingTerminated(message, signum)
        stopped.run_dir = self.run.run_dir if self.last_checkpoint_step is not None else None
        return stopped


def current_path(fd: int) -> str | None:
    """Where the directory open as `fd` is now, or None where the system cannot say."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")  # Linux
    except OSError:
        return None
    return path if os.path.isdir(path) and not path.endswith(" (deleted)") else None
