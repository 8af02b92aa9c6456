"""The one training core under both drivers: what a run is, what it counts, saves and says.

The objective is eq. 10 summed over the groups of a step, minimised by a `torch.optim.Adam` over
the enumerated ELBO used as a module (`train.elbo.make_elbo`). Two thin drivers own the loop itself:
`train.loop.Trainer` on one device, and `train.lightning` under PyTorch Lightning (DDP). Both
build their run with `setup_run` and keep its books with a `RunBook`:

    setup_run   data, the model config filled from the data, model and guide, test groups
    RunBook     counters (step, epoch, step within it), the window of losses not yet logged,
                epoch sums, metrics rows, the test evaluation at each epoch end, the checkpoint
                payload and its restore, the divergence and interruption messages, summary.json

A checkpoint holds everything a step depends on, so on one process a resumed run repeats the
losses of an uninterrupted one exactly.
"""

from __future__ import annotations

import math
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from tqdm.auto import tqdm

from ..data import ImageSet, fixed_groups, load_dataset, own_groups, training_groups
from ..errors import RunError, TrainingDiverged, TrainingInterrupted, TrainingTerminated
from ..files import write_json
from ..guide import Guide, build, default_guide
from ..model import ModelConfig
from .checkpoints import CHECKPOINT_VERSION, check_compatible, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .diagnostics import beta_diagnostics, cluster_assignments
from .metrics import MetricsLog, test_metrics

# torch.distributions' validation message for a parameter outside its constraint.
INVALID_PARAMETER_RE = re.compile(r"Expected parameter (\w+) .*? of distribution (\w+).*found invalid values", re.S)


@dataclass
class RunSetup:
    """A run before its first step: configs, data, model and guide."""

    train_cfg: TrainConfig
    model_cfg: ModelConfig
    guide_name: str
    model: torch.nn.Module
    guide: Guide
    train_set: ImageSet
    test_set: ImageSet
    test_groups: torch.Tensor
    # beta is read on groups that share something where the data has such groups
    diagnostic_groups: torch.Tensor


def setup_run(train_cfg: TrainConfig, model_cfg: ModelConfig | None = None, quiet: bool = False) -> RunSetup:
    """Load the data and build model and guide; writes nothing, so bad input leaves no run behind."""
    # Pyro's param store is global: names left by an earlier model in this process would
    # shadow this run's parameters (and break the JIT ELBO's tracing).
    pyro.clear_param_store()
    pyro.set_rng_seed(train_cfg.seed)
    guide_name = train_cfg.guide or default_guide(train_cfg.model)
    train_set = load_dataset(train_cfg.dataset, "train", train_cfg.data_dir, train_cfg.image_size)
    test_set = load_dataset(train_cfg.dataset, "test", train_cfg.data_dir, train_cfg.image_size)
    if train_set.notice and not quiet:
        tqdm.write(train_set.notice)
    model_cfg = model_cfg or ModelConfig(x_shape=train_set.x_shape)
    if model_cfg.x_shape != tuple(train_set.x_shape):
        raise RunError(
            f"the model expects images of shape {model_cfg.x_shape} but {train_cfg.dataset} "
            f"has {tuple(train_set.x_shape)}; pass --image-size or build the config from the data"
        )
    model, guide = build(model_cfg, train_cfg.model, guide_name)
    test_groups = fixed_groups(len(test_set), train_cfg.group_size)
    diagnostic_groups = own_groups(test_set, train_cfg.group_size)
    if diagnostic_groups is None:
        diagnostic_groups = test_groups
    return RunSetup(train_cfg, model_cfg, guide_name, model, guide, train_set, test_set, test_groups, diagnostic_groups)


def run_sampler(run: RunSetup, groups_per_step: int, device):
    """The sampler of the run's training groups (`--groups`, `--mix`), `groups_per_step` per step."""
    cfg = run.train_cfg
    return training_groups(
        cfg.groups, run.train_set, cfg.group_size, groups_per_step, cfg.seed, device, cfg.mix, cfg.group_warmup
    )


class RunBook:
    """The bookkeeping of a run in `run_dir`, shared by both drivers.

    The book draws its groups from `sampler` (data/training_groups.py), whose cluster
    assignments it refreshes and saves for `clusters:ALPHA` groups. A step of
    `samples_per_step` samples adds its loss (a device tensor) with `record`; the
    drivers ask `log_due` / `checkpoint_due` and call `log`, `end_epoch` and `payload` then.
    Losses stay on the device until a log: that is the one host sync of a window. Under DDP every
    process keeps a book, `reduce` sums the window over processes and only the `writer` writes.
    """

    def __init__(
        self,
        run: RunSetup,
        run_dir: str,
        sampler,
        samples_per_step: int,
        writer: bool = True,
        run_id: str | None = None,
    ):
        self.run, self.cfg, self.run_dir, self.writer = run, run.train_cfg, run_dir, writer
        self.run_id = run_id  # config.json's, written into every checkpoint
        self.sampler, self.samples_per_step = sampler, samples_per_step
        self.steps_per_epoch = sampler.steps_per_epoch
        self.step = self.epoch = self.step_in_epoch = 0
        self.train_seconds, self.last_result, self.last_checkpoint_step = 0.0, {}, None
        self.pending: list[torch.Tensor] = []
        self.epoch_loss_sum, self.epoch_loss_steps = 0.0, 0
        self.metrics = MetricsLog(os.path.join(run_dir, "metrics.csv")) if writer else None
        self._clock = None

    # -- counters ---------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.epoch >= self.cfg.epochs

    def record(self, loss: torch.Tensor):
        # A copy: a captured step (--graph) returns the same static tensor at every replay.
        self.pending.append(loss.detach().clone())
        self.step += 1
        self.step_in_epoch += 1

    @property
    def epoch_done(self) -> bool:
        return self.step_in_epoch >= self.steps_per_epoch

    @property
    def log_due(self) -> bool:
        return self.step % self.cfg.log_every == 0 or self.epoch_done

    @property
    def checkpoint_due(self) -> bool:
        # The epoch end writes its own checkpoint, after the test evaluation.
        return self.step % self.cfg.checkpoint_every == 0 and not self.epoch_done

    def start_clock(self):
        self._clock = time.perf_counter()

    def stop_clock(self):
        if self._clock is not None:
            self.train_seconds += time.perf_counter() - self._clock
            self._clock = None

    # -- logging ----------------------------------------------------------------------
    def read_window(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[float]:
        """The pending losses as floats (summed over processes by `reduce`), checked finite."""
        if not self.pending:
            return []
        window = torch.stack(self.pending)
        losses = (reduce(window) if reduce else window).tolist()  # the one host-device sync of a window
        bad = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
        if bad is not None:
            # losses[-1] belongs to self.step, so losses[bad] to the step counted back from it.
            raise self.diverged(self.step - len(losses) + 1 + bad, f"the ELBO became {losses[bad]}")
        return losses

    def log(self, reduce=None) -> float | None:
        """Write a metrics row for the pending steps; returns their train ELBO per sample."""
        losses = self.read_window(reduce)
        self.pending = []
        if not losses:
            return None
        self.epoch_loss_sum += sum(losses)
        self.epoch_loss_steps += len(losses)
        train_elbo = -sum(losses) / len(losses) / self.samples_per_step
        if self.metrics:
            self.metrics.write(step=self.step, epoch=self.epoch, train_elbo=train_elbo)
        return train_elbo

    def end_epoch(self, model, guide, test_images: torch.Tensor | None, train_images: torch.Tensor) -> dict:
        """The test evaluation, beta diagnostics and metrics row of the epoch just finished (on the
        writer only), and the cluster assignments that `clusters:ALPHA` groups draw from next."""
        result = {}
        if self.writer:
            result = test_metrics(model, guide, test_images, self.run.test_groups)
            result.update(beta_diagnostics(model, guide, test_images, self.run.diagnostic_groups))
            result["train_elbo"] = -self.epoch_loss_sum / max(self.epoch_loss_steps, 1) / self.samples_per_step
            row = {k: v for k, v in result.items() if k != "cluster_shares"}
            self.metrics.write(step=self.step, epoch=self.epoch, elapsed_s=round(self.train_seconds, 3), **row)
        self.last_result, self.epoch_loss_sum, self.epoch_loss_steps = result, 0.0, 0
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        if self.sampler.reads_assignments and self.cfg.group_warmup <= self.epoch < self.cfg.epochs:
            self.sampler.set_assignments(cluster_assignments(guide, train_images))
        return result

    # -- checkpoints ------------------------------------------------------------------
    def payload(self, model, guide, optimizer, parameters, reduce=None) -> dict:
        """Everything a step depends on, after checking that it is worth falling back to."""
        window = self.read_window(reduce)  # stays pending: the next log writes it
        if not torch.stack([p.isfinite().all() for p in parameters]).all():
            raise self.diverged(self.step, "the weights became NaN/inf")
        run = self.run
        return {
            "version": CHECKPOINT_VERSION,
            "run_id": self.run_id,
            "step": self.step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "train_seconds": self.train_seconds,
            "last_result": self.last_result,
            "train_samples": len(run.train_set),
            "window": torch.tensor(window, dtype=torch.float32),
            "epoch_loss": (self.epoch_loss_sum, self.epoch_loss_steps),
            # clusters:ALPHA groups of the epoch under way draw from these
            "group_assignments": self.sampler.assignments,
            "model": model.state_dict(),
            "guide": guide.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(),
            "config": {
                "model": run.model_cfg.to_dict(),
                "model_name": self.cfg.model,
                "guide_name": run.guide_name,
                "train": self.cfg.to_dict(),
            },
        }

    def checkpoint(self, model, guide, optimizer, parameters, reduce=None):
        payload = self.payload(model, guide, optimizer, parameters, reduce)
        if self.writer:
            save_checkpoint(self.run_dir, self.step, payload, self.cfg.keep_checkpoints)
        self.last_checkpoint_step = self.step

    def restore(self, ckpt: dict, model, guide, optimizer=None, device="cpu"):
        """Continue from `ckpt`: weights, optimiser, RNG, counters and the losses not yet logged."""
        run = self.run
        check_compatible(ckpt, run.model_cfg, self.cfg.model, run.guide_name, self.cfg)
        if ckpt.get("train_samples", len(run.train_set)) != len(run.train_set):
            raise RunError(
                f"{self.cfg.dataset} now has {len(run.train_set)} training images but had "
                f"{ckpt['train_samples']} at the checkpoint; restore the data or start a new run"
            )
        model.load_state_dict(ckpt["model"])
        guide.load_state_dict(ckpt["guide"])
        if optimizer is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        self.step, self.epoch, self.step_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["step_in_epoch"]
        self.train_seconds, self.last_result = ckpt["train_seconds"], ckpt["last_result"]
        window = ckpt["window"].to(device)
        # Other processes add zeros, so the window is counted once when it is summed over them.
        self.pending = list(window if self.writer else torch.zeros_like(window))
        self.epoch_loss_sum, self.epoch_loss_steps = ckpt["epoch_loss"]
        if ckpt.get("group_assignments") is not None:
            self.sampler.set_assignments(ckpt["group_assignments"])
        self.last_checkpoint_step = self.step
        if self.metrics:
            self.metrics.truncate_after(self.step)  # the resumed run logs these steps again

    # -- messages ---------------------------------------------------------------------
    def checkpoint_kept(self) -> str:
        if self.last_checkpoint_step is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint (step {self.last_checkpoint_step}) is kept in {self.run_dir}"

    def diverged(self, step: int, what: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"training diverged at step {step}: {what}; {self.checkpoint_kept()}. Likely causes: a learning "
            f"rate too high (try --lr {self.cfg.lr / 10:g}), exploding gradients (try --clip-norm 10) or a very "
            "small --var-x"
        )

    def diverged_from(self, error: ValueError) -> TrainingDiverged | None:
        """With Pyro's validation on, divergence shows up first as a distribution built from
        NaN/inf/zero scales rather than as a NaN loss; None for any other ValueError."""
        invalid = INVALID_PARAMETER_RE.search(str(error))
        if invalid is None:
            return None
        what = f"the {invalid[1]} of a {invalid[2]} distribution became invalid (NaN, inf or zero)"
        return self.diverged(self.step + 1, what)

    def interrupted(self, signum: int | None = None) -> TrainingInterrupted:
        """The error a run stopped by Ctrl-C, or by the signal `signum` (SIGTERM: TrainingTerminated), ends with."""
        how = (
            "start again"
            if self.last_checkpoint_step is None
            else f"continue with `python run.py --resume {self.run_dir}`"
        )
        by = f" by {signal.Signals(signum).name}" if signum is not None else ""
        error = TrainingTerminated if signum == signal.SIGTERM else TrainingInterrupted
        return error(f"training stopped at step {self.step}{by}; {self.checkpoint_kept()}; {how}")

    def write_summary(self, **extra) -> dict:
        summary = {
            "steps": self.step,
            "epochs": self.epoch,
            "train_seconds": round(self.train_seconds, 2),
            "seconds_per_epoch": round(self.train_seconds / max(self.epoch, 1), 4),
            **extra,
            **self.last_result,
        }
        if self.writer:
            write_json(os.path.join(self.run_dir, "summary.json"), summary)
        return summary
