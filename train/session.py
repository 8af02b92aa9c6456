"""One training session of a run, built the same way under both drivers.

The objective is eq. 10 summed over the groups of a step, minimised by a `torch.optim.Adam` over
the enumerated ELBO used as a module (`train.elbo.make_elbo`). Two thin drivers own the loop:
`train.loop.Trainer` on one device and `train.lightning` under PyTorch Lightning (DDP). Both
build a `Session` and call it at the same points:

    session.step(run_step)     a step under the run's validation setting; divergence named
    session.begin()            record the session's environment and data (environment.json)
    session.after_step()       log the window when due (hooks.on_log), checkpoint when due
    session.end_epoch()        the epoch's hooks (test metrics, beta diagnostics, cluster
                               refresh, metrics.csv, TensorBoard), then a checkpoint
    session.finish()           summary.json

A checkpoint holds everything a step depends on (trained/checkpoints.py names its keys), so on
one process a resumed run repeats the losses of an uninterrupted one exactly. Under DDP every
process keeps a session; `reduce` sums the losses over processes and only the writer (rank 0)
writes the run directory.
"""

from __future__ import annotations

import logging
import math
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch

from ..data import ImageSet, load_dataset, own_groups, training_groups
from ..errors import RunError, TrainingDiverged, TrainingInterrupted, TrainingTerminated
from ..files import write_json
from ..model import ModelConfig
from ..trained.checkpoints import make_checkpoint, read_state, save_checkpoint, set_rng_state
from ..trained.diagnostics import inactive_beta_message
from ..trained.environment import record_session, session_record
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


def load_training_data(train_cfg) -> TrainingData:
    """The run's data. Its notices (e.g. that MNIST fell back to the offline digits) are logged."""
    train_set = load_dataset(train_cfg.dataset, "train", train_cfg.data_dir, train_cfg.image_size)
    test_set = load_dataset(train_cfg.dataset, "test", train_cfg.data_dir, train_cfg.image_size)
    if train_set.notice:
        logger.warning(train_set.notice)
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
        self.book = RunBook(cfg.epochs, self.sampler.steps_per_epoch, samples, cfg.log_every, cfg.checkpoint_every)
        self.optimizer: torch.optim.Optimizer | None = None
        self.reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.validate = cfg.validation_on(self.device.type)
        self.last_checkpoint_step: int | None = None
        self.hooks, self.hooks_open = [], False

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
        session runs on and reads (trained/environment.py)."""
        if self.writer:
            record = session_record(self.device, self.data.train_set, self.data.test_set, self.book.step)
            record_session(self.run.run_dir, record)

    def close(self) -> None:
        for hook in self.hooks:
            hook.close()

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
        if book.log_due:
            train_elbo = book.take_window(self.read_window())
            if train_elbo is not None:
                for hook in self.hooks:
                    hook.on_log(book, train_elbo)
        if book.checkpoint_due:
            book.stop_clock()
            self.checkpoint()
            book.start_clock()
        return train_elbo

    def end_epoch(self) -> dict:
        """The epoch's hooks, in order, then the epoch's checkpoint; the epoch's numbers."""
        book = self.book
        book.stop_clock()
        result = {"train_elbo": book.epoch_train_elbo()}
        for hook in self.hooks:
            hook.on_epoch_end(book, result)
        book.next_epoch(result)
        self.checkpoint()
        return result

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
            if note := inactive_beta_message(summary):
                logger.warning(note)
        return summary

    # -- checkpoints ------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Every process checks that the state is worth falling back to; the writer saves it."""
        window = self.read_window()  # stays pending: the next log writes it
        parameters = [p for module in (self.model, self.guide) for p in module.parameters()]
        if not torch.stack([p.isfinite().all() for p in parameters]).all():
            raise self.diverged(self.book.step, "the weights became NaN/inf")
        if self.writer:
            payload = make_checkpoint(
                run_id=self.run.run_id,
                config=self.run.config_payload(),
                book_state=self.book.state_dict(window),
                sampler_state=self.sampler.state_dict(),
                train_samples=len(self.data.train_set),
                model=self.model,
                guide=self.guide,
                optimizer=self.optimizer,
            )
            keep, own = self.cfg.keep_checkpoints, self.run.owns_unnamed_checkpoints
            save_checkpoint(self.run.run_dir, self.book.step, payload, keep, accept_unnamed=own)
        self.last_checkpoint_step = self.book.step

    def restore(self, checkpoint: dict) -> None:
        """Continue from `checkpoint`: weights, optimiser, RNG, counters, the losses not yet logged,
        the sampler's state; hooks drop what was logged after it."""
        run, state = self.run, read_state(checkpoint, self.run, len(self.data.train_set))
        self.model.load_state_dict(state.model)
        self.guide.load_state_dict(state.guide)
        self.optimizer.load_state_dict(state.optimizer)
        set_rng_state(state.rng)
        self.book.load_state_dict(state.book, self.device, self.writer)
        self.sampler.load_state_dict(state.sampler)
        self.last_checkpoint_step = self.book.step
        for hook in self.hooks:
            hook.on_restore(self.book.step)
        logger.info(f"resuming {run.run_dir} from step {self.book.step} (epoch {self.book.epoch + 1})")

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
