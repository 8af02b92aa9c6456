"""The single-device driver: SVI steps over resident data, with the books kept by `train.core`.

The loss is `TraceEnum_ELBO`, sync-free (train/elbo.py) or JIT, used as a module, as in Pyro's
Lightning example: `elbo(model, guide)` is an `nn.Module` whose forward is the differentiable
loss, optimised by a `torch.optim.Adam`. It is the same estimator as `SVI.step`, but the
optimiser state is a plain state_dict (exact resume), gradients can be clipped, and the loss
never leaves the device between logs.

SIGINT (Ctrl-C) and SIGTERM (what schedulers and `kill` send) let the step under way finish,
write a checkpoint at it and stop with the command that continues the run, so that the resumed
run repeats the losses of an uninterrupted one (exit 130 and 143 from run.py). A second signal
stops at once, without a checkpoint. The run directory is locked (`train.lock`) while it trains.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import replace

import pyro
import torch
from tqdm.auto import tqdm

from ..data import to_unit_float
from ..errors import RunError, TrainingInterrupted
from ..model import ModelConfig
from .checkpoints import latest_checkpoint
from .config import TrainConfig, resolve_device
from .core import RunBook, run_sampler, setup_run
from .diagnostics import inactive_beta_message
from .elbo import Levers, make_elbo
from .graph import CapturedStep
from .lock import run_lock
from .rundir import claim_run_dir, load_config, new_run_dir, save_config


class Trainer:
    """One run on one device: the data resident there, the loss module and its optimiser.

    Building one writes nothing, so bad input leaves no run directory behind; `start` begins a
    new run in a directory, `restore` continues one from its newest good checkpoint.
    """

    def __init__(self, train_cfg: TrainConfig, model_cfg: ModelConfig | None = None, quiet: bool = False):
        self.cfg, self.quiet = train_cfg, quiet
        self.device = resolve_device(train_cfg.device)
        self.run = setup_run(train_cfg, model_cfg, quiet)
        self.model_cfg, self.guide_name = self.run.model_cfg, self.run.guide_name
        self.model, self.guide = self.run.model.to(self.device), self.run.guide.to(self.device)
        # uint8 keeps the whole training set resident on the device at a quarter of the size.
        self.images = self.run.train_set.images.to(self.device)
        self.test_images = self.run.test_set.images.to(self.device)
        self.sampler = run_sampler(self.run, train_cfg.groups_per_step, self.device)
        self.loss_fn = make_elbo(train_cfg.jit, Levers.of(train_cfg))(self.model, self.guide)
        self.optimizer = torch.optim.Adam(self.loss_fn.parameters(), lr=train_cfg.lr, capturable=train_cfg.graph)
        self.validate = train_cfg.validation_on(self.device.type)
        self.run_step = CapturedStep(self.train_step, self.device) if train_cfg.graph else self.train_step
        self.book: RunBook | None = None

    @property
    def run_dir(self) -> str | None:
        return self.book.run_dir if self.book else None

    def _open_book(self, run_dir: str, run_id: str | None) -> RunBook:
        samples = self.cfg.group_size * self.cfg.groups_per_step
        self.book = RunBook(self.run, run_dir, self.sampler, samples, run_id=run_id)
        return self.book

    def start(self, run_dir: str):
        self._open_book(run_dir, save_config(run_dir, self.model_cfg, self.cfg))

    def restore(self, run_dir: str):
        run_id = load_config(run_dir)[2].get("run_id")
        ckpt = latest_checkpoint(run_dir, run_id)
        if ckpt is None:
            raise RunError(f"{run_dir} has no readable checkpoint to resume from; start a new run instead")
        self._open_book(run_dir, run_id).restore(ckpt, self.model, self.guide, self.optimizer, self.device)
        if not self.quiet:
            tqdm.write(f"resuming {run_dir} from step {self.book.step} (epoch {self.book.epoch})")

    def checkpoint(self):
        self.book.checkpoint(self.model, self.guide, self.optimizer, self.loss_fn.parameters())

    def train_step(self, idx: torch.Tensor) -> torch.Tensor:
        x = to_unit_float(self.images[idx])
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(x)
        loss.backward()
        if self.cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.loss_fn.parameters(), self.cfg.clip_norm)
        self.optimizer.step()
        return loss.detach()

    def _guarded_step(self, idx: torch.Tensor) -> torch.Tensor:
        try:
            # With validation on (--validate), divergence shows up first as a distribution built
            # from NaN/inf/zero scales rather than as a NaN loss.
            with pyro.validation_enabled(self.validate):
                return self.run_step(idx)
        except ValueError as e:
            diverged = self.book.diverged_from(e)
            if diverged is None:
                raise
            raise diverged from None

    def fit(self, writer=None) -> dict:
        book = self.book
        if book.finished and not self.quiet:
            tqdm.write(f"{book.run_dir} has already finished its {self.cfg.epochs} epochs; writing its summary again")
        bar = tqdm(
            total=self.cfg.epochs * book.steps_per_epoch,
            initial=book.step,
            disable=self.quiet,
            desc=os.path.basename(book.run_dir),
            unit="step",
            dynamic_ncols=True,
        )
        stop_requests, restore_handlers = stop_on_signals()
        try:
            while not book.finished:
                book.start_clock()
                for idx in self.sampler.epoch(book.epoch, start_step=book.step_in_epoch):
                    book.record(self._guarded_step(idx))
                    bar.update()
                    if book.log_due:
                        train_elbo = book.log()
                        bar.set_postfix(epoch=book.epoch, elbo=f"{train_elbo:.2f}")
                        if writer:
                            writer.add_scalar("train/elbo", train_elbo, book.step)
                    if book.checkpoint_due:
                        book.stop_clock()
                        self.checkpoint()
                        book.start_clock()
                    if stop_requests:
                        book.stop_clock()
                        self.checkpoint()
                        raise book.interrupted(stop_requests[0])
                book.stop_clock()
                result = book.end_epoch(self.model, self.guide, self.test_images, self.images)
                if writer:
                    for k in ("test_elbo", "cluster_entropy", "clusters_used"):
                        if k in result:
                            writer.add_scalar(f"test/{k.replace('test_', '')}", result[k], book.step)
                self.checkpoint()
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:
            raise book.interrupted() from None
        finally:
            restore_handlers()
            bar.close()
        summary = book.write_summary()
        if note := inactive_beta_message(summary):  # said even with --quiet: it is a result, not progress
            tqdm.write(note)
        return summary


def stop_on_signals() -> tuple[list[int], object]:
    """Handle SIGINT and SIGTERM by noting them in the returned list (the loop stops after the
    step under way); a second one raises KeyboardInterrupt at once. Returns the list and the
    function that puts the previous handlers back. Only the main thread can take signals."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        return received, lambda: None

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}

    def restore():
        for signum, old in previous.items():
            signal.signal(signum, old)

    return received, restore


def train(
    train_cfg: TrainConfig,
    runs_dir: str = "runs",
    model_cfg: ModelConfig | None = None,
    quiet: bool = False,
    writer_factory=None,
    run_dir: str | None = None,
) -> str:
    """Train a new run in `run_dir`, which must not exist, or else in a new directory under
    `runs_dir`; returns the run directory."""
    run_dir = claim_run_dir(run_dir) if run_dir else new_run_dir(runs_dir, train_cfg.dataset, train_cfg.model)
    try:
        trainer = Trainer(train_cfg, model_cfg, quiet=quiet)
    except BaseException:
        os.rmdir(run_dir)  # still empty: bad input leaves no half-made run behind
        raise
    with run_lock(run_dir, new=True):
        trainer.start(run_dir)
        fit_with_writer(trainer, writer_factory)
    return run_dir


def resume(
    run_dir: str, quiet: bool = False, device: str | None = None, writer_factory=None, epochs: int | None = None
) -> str:
    """Continue a run from its newest good checkpoint, in the same directory, on one device.

    `epochs` extends the run to that many epochs in all (config.json records the new total);
    it may not be fewer than the epochs already trained.
    """
    with run_lock(run_dir):
        return _resume(run_dir, quiet, device, writer_factory, epochs)


def _resume(run_dir: str, quiet: bool, device: str | None, writer_factory, epochs: int | None) -> str:
    model_cfg, train_cfg, saved = load_config(run_dir)
    if "lightning" in saved:
        raise RunError(
            f"{run_dir} was trained under Lightning; resume it with train.lightning.fit_lightning(..., "
            f"resume_dir=...) or `python run.py --resume {run_dir}`, which picks its launch options"
        )
    if device:
        train_cfg = replace(train_cfg, device=device)
    if epochs is not None:
        train_cfg = replace(train_cfg, epochs=epochs)
    trainer = Trainer(train_cfg, model_cfg, quiet=quiet)
    trainer.restore(run_dir)
    if epochs is not None and epochs != saved["train"]["epochs"]:
        if trainer.book.epoch > epochs:
            raise RunError(
                f"{run_dir} has already trained {trainer.book.epoch} epochs, more than --epochs {epochs}; "
                f"pass at least {trainer.book.epoch}"
            )
        extra = {k: v for k, v in saved.items() if k not in ("model", "train", "model_name", "guide_name")}
        # The device stays the run's own: --device only picks where this session trains.
        save_config(run_dir, model_cfg, replace(train_cfg, device=saved["train"]["device"]), extra)
    fit_with_writer(trainer, writer_factory)
    return run_dir


def fit_with_writer(trainer: Trainer, writer_factory=None):
    writer = writer_factory(trainer.run_dir) if writer_factory else None
    try:
        trainer.fit(writer)
    finally:
        if writer:
            writer.close()  # flushes the events of a run that stops early too
