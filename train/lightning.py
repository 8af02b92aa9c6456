"""The data-parallel driver: SVI under PyTorch Lightning (DDP over torch.distributed), after Pyro's
`examples/svi_lightning.py`, around the same `Session` as on one device.

The objective is a sum of per-group ELBOs (eq. 10) and every group has its own beta, so groups
split across R processes without changing the estimator. A step draws R*G groups (one step of
the run's sampler); process r takes groups rG..(r+1)G-1, with its own Monte Carlo noise, and
computes L_r, the negative ELBO of its G groups. DDP then applies

    (1/R) sum_r grad L_r = (1/R) grad L,    L = sum_r L_r, the loss of all R*G groups,

the gradient a single process would take on the same R*G groups, scaled by 1/R (Adam is
invariant to that scale up to its eps). Rank 0 alone writes the run directory; its metrics rows
count steps of R*G*B samples. Lightning's own counters are not used: the session's book counts
steps and epochs, so a resumed run starts its first epoch where the checkpoint left it.

The run's `validate` setting applies to every step as on one device; `graph` (a captured CUDA
step) is refused, since Lightning owns the step. A process that dies mid-run (killed, out of
memory) leaves the others failing in their next collective: that failure is one line,
`ProcessLost`, naming the checkpoint to resume from, instead of the backend's traceback.

Logging. Every number of metrics.csv also goes through `LightningModule.log` (`LoggedNumbers`):
a logged window's train ELBO at its step, an epoch's numbers (train and test ELBO, cluster
usage, the beta diagnostics, the time) at its end, named as trained/metrics.py `logged_scalars`
names them (train/elbo, test/elbo, beta/kl, ...), at the run's own `step` and `epoch`. So the
`logger` of `fit` and `resume` (any Lightning logger, or a list; none by default: metrics.csv is
the run's record) receives the rows of metrics.csv, one row per row, and callbacks can monitor
the numbers (say EarlyStopping on test/elbo). A window goes to the loggers straight from the
hook, since Lightning would repeat a value logged on one step at every step after it. Rank 0
computes the test numbers and hands them to every process, so that every process logs the same.
A resumed run logs from its checkpoint's step again, as metrics.csv does; a logger outside the
run keeps the rows of the steps done twice.

A LightningDataModule cannot replace the run's data. UG-VAE's unit of data is a group sharing
one beta (eq. 10), not a batch of images: the run's sampler (data/sampling.py) draws each step's
groups by the `groups` spec (random, labels:ALPHA, the model's own clusters, a mixture's share),
from a generator per (seed, epoch) and the cluster assignments a checkpoint keeps, so that a
resumed run repeats its groups exactly; `RankGroups` splits each step's groups over processes so
that R processes take the step one process would; the fixed test groups feed the test ELBO and
the beta diagnostics; and the checkpoint counts steps per epoch against the data's size. A
DataModule's batches would be groups of nothing in particular, drawn by a loader a checkpoint
cannot restore. Its images are welcome as in-memory tensors: `fit(train_data=...)`
(data/tensors.py), which the run's samplers then group.
"""

from __future__ import annotations

import os
import re
import warnings

import pyro
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import to_unit_float
from ..errors import ConfigError, ProcessLost
from ..progress import progress
from ..trained.metrics import logged_scalars
from ..trained.threads import resolve_threads
from .elbo import elbo_module
from .hooks import Hook, epoch_row, step_row
from .session import Session, adam

try:
    from lightning.pytorch import LightningDataModule, LightningModule, Trainer
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
except ModuleNotFoundError:  # the optional extra `ugvae[lightning]`; `lightning_trainer` says how to get it
    LightningDataModule = LightningModule = object
    Trainer = None


class ImageGroups(Dataset):
    """uint8 images indexed by a (G, B) index tensor: one item is all the groups of a step."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx]

    def __len__(self) -> int:
        return len(self.images)


class RankGroups(Sampler):
    """This process's G of the R*G groups of each remaining step of the book's current epoch."""

    def __init__(self, session: Session, rank: int):
        per_rank = session.sampler.groups_per_step // session.world_size
        self.session = session
        self.share = slice(rank * per_rank, (rank + 1) * per_rank)

    def __len__(self) -> int:
        return self.session.sampler.steps_per_epoch - self.session.book.step_in_epoch

    def __iter__(self):
        book = self.session.book
        for idx in self.session.sampler.epoch(book.epoch, start_step=book.step_in_epoch):
            yield idx[self.share]


class GroupData(LightningDataModule):
    """Training images resident on each process's device, served as that process's groups."""

    def __init__(self, module: LightningUGVAE):
        super().__init__()
        self.module = module

    def train_dataloader(self) -> DataLoader:
        # Called after the module's setup, which makes the session.
        session = self.module.session
        sampler = RankGroups(session, self.trainer.global_rank)
        # A private generator: iterating must not advance the global RNG that draws z and beta.
        return DataLoader(
            ImageGroups(session.train_images), sampler=sampler, batch_size=None, generator=torch.Generator()
        )


class LoggedNumbers(Hook):
    """The rows of metrics.csv through `LightningModule.log` (module docstring), on every process."""

    def __init__(self, module: LightningUGVAE):
        self.module = module
        self.open = False  # self.log takes step values from the first batch on, not while restoring

    def on_log(self, book, train_elbo):
        if not self.open:
            return
        row = step_row(book, train_elbo)
        scalars = logged_scalars(row)
        # Lightning keeps a value logged on a step until the epoch ends and would send it to the
        # loggers again at every later step: the loggers get the window here, once, at its step.
        self.module.log_dict(as_tensors(scalars), on_step=True, on_epoch=False, logger=False, batch_size=1)
        if self.module.trainer.is_global_zero:
            # Lightning saves the loggers (their own files, not the run's) after each epoch's numbers.
            for logger in self.module.loggers:
                logger.log_metrics({"epoch": row["epoch"], **scalars}, step=row["step"])

    def on_epoch_end(self, book, result):
        # Only rank 0 has computed the test numbers; a collective that every process reaches here.
        row = epoch_row(book, self.module.trainer.strategy.broadcast(result, src=0))
        # A logged `step` is the step Lightning hands the loggers.
        numbers = {"step": row["step"], "epoch": row["epoch"], **logged_scalars(row)}
        self.module.log_dict(as_tensors(numbers), on_step=False, on_epoch=True, batch_size=1)


def as_tensors(numbers: dict) -> dict:
    """float64 tensors, so that the loggers get metrics.csv's numbers to the last digit."""
    return {name: torch.tensor(float(value), dtype=torch.float64) for name, value in numbers.items()}


class LightningUGVAE(LightningModule):
    """The ELBO module and its optimiser; every rank keeps a Session, rank 0 writes the run."""

    def __init__(self, run, data, model, guide, checkpoint: dict | None = None, threads: int | None = None):
        super().__init__()
        self.run, self.data, self.threads = run, data, threads
        self.pair = (model, guide)  # a tuple, so that they register once, inside the loss module
        self.loss_fn = elbo_module(model, guide, jit=run.train_cfg.jit, levers=run.train_cfg.levers)
        self.checkpoint_to_restore, self.session, self.bar = checkpoint, None, None
        self.logged = LoggedNumbers(self)

    def configure_optimizers(self):
        self.optimizer = adam(self.loss_fn.parameters(), self.run.train_cfg)
        return self.optimizer

    def setup(self, stage: str):
        ignore_advice_that_does_not_apply()  # also in a process of its own (ddp_spawn, torchrun)
        # Processes started by torchrun or SLURM never saw rank 0 create the directory.
        self.run.run_dir = self.trainer.strategy.broadcast(self.run.run_dir, src=0)
        self.run.run_id = self.trainer.strategy.broadcast(self.run.run_id, src=0)
        device = self.trainer.strategy.root_device
        # The processes of a node share its cores: by default each takes its part of them.
        torch.set_num_threads(resolve_threads(self.threads, processes=self.trainer.num_devices))
        writer = self.trainer.is_global_zero
        self.session = Session(self.run, self.data, *self.pair, device, self.trainer.world_size, writer=writer)
        self.session.reduce = self.reduce
        self.session.open_hooks()
        self.session.hooks.append(self.logged)

    def on_train_start(self):
        session = self.session
        session.optimizer = self.optimizer
        if self.checkpoint_to_restore is not None:
            session.restore(self.checkpoint_to_restore)
            self.checkpoint_to_restore = None
            if self.global_rank > 0:
                # The checkpoint holds rank 0's generators: the others draw new noise from here.
                pyro.set_rng_seed(self.run.train_cfg.seed + 7919 * self.global_rank + session.book.step)
        else:
            session.seed(self.global_rank)
        self.logged.open = True
        session.begin()
        if session.writer:
            book = session.book
            name = os.path.basename(self.run.run_dir)
            self.bar = progress(total=book.epochs * book.steps_per_epoch, initial=book.step, desc=name, unit="step")

    def reduce(self, window: torch.Tensor) -> torch.Tensor:
        # A copy: the sum is written in place, and the window may still be logged later.
        return self.trainer.strategy.reduce(window.clone(), reduce_op="sum")

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.session.step(lambda: self.loss_fn(to_unit_float(batch)))

    def on_train_epoch_start(self):
        self.session.book.start_clock()

    def on_train_batch_end(self, outputs, batch, batch_idx: int):
        train_elbo = self.session.after_step()
        if self.bar is not None:
            self.bar.update()
            if train_elbo is not None:
                book = self.session.book
                self.bar.set_postfix(epoch=f"{book.epoch + 1}/{book.epochs}", elbo=f"{train_elbo:.2f}")

    def on_train_epoch_end(self):
        self.session.end_epoch()

    def on_train_end(self):
        self.session.finish(world_size=self.trainer.world_size)

    def teardown(self, stage: str):
        if self.bar is not None:
            self.bar.close()
        if self.session is not None:
            self.session.close()


def launched_as_rank_zero() -> bool:
    """Whether this process will be global rank 0: the one a user starts (Lightning spawns or
    re-runs the others with LOCAL_RANK set), or rank 0 of torchrun / SLURM."""
    return rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0"


def as_loggers(logger) -> list:
    """`logger` of `fit` and `resume` (a Lightning logger, a list of them, or None) as a list, or
    one ConfigError naming it."""
    if Trainer is None:
        raise ConfigError("`logger` needs PyTorch Lightning; install it with pip install 'ugvae[lightning]'")
    loggers = list(logger) if isinstance(logger, (list, tuple)) else [] if logger is None else [logger]
    strangers = [type(one).__name__ for one in loggers if not isinstance(one, Logger)]
    if strangers or (logger is not None and not loggers):
        raise ConfigError(
            f"`logger` must be a Lightning logger (lightning.pytorch.loggers.Logger, such as CSVLogger) or a list "
            f"of them, got {', '.join(strangers) or 'an empty list'}"
        )
    return loggers


def lightning_trainer(run, epochs_left: int, callbacks=(), logger=None):
    """Lightning's Trainer for the run's launch options and `logger` (a Lightning logger, a list of
    them, or None), or one ConfigError naming the problem."""
    cfg, launch = run.train_cfg, run.launch
    if Trainer is None:
        raise ConfigError("`launch` needs PyTorch Lightning; install it with pip install 'ugvae[lightning]'")
    loggers = as_loggers(logger)
    if cfg.graph:
        raise ConfigError("`graph` captures the single-device step; Lightning owns its step: turn `graph` off")
    if cfg.groups.startswith("clusters"):  # the refresh of assignments is untested across processes
        raise ConfigError("`groups` clusters:ALPHA is not supported under Lightning yet; train on one device")
    try:
        return Trainer(
            **launch.to_dict(),
            max_epochs=max(epochs_left, 0),
            gradient_clip_val=cfg.clip_norm,
            use_distributed_sampler=False,  # RankGroups already splits every step's groups
            reload_dataloaders_every_n_epochs=1,  # a resumed first epoch is shorter than the others
            logger=loggers or False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            callbacks=list(callbacks),
        )
    except (MisconfigurationException, ValueError, TypeError) as e:
        raise ConfigError(
            f"Lightning rejected the launch options ({e}); check `strategy`, `devices`, `num_nodes` and `accelerator`"
        ) from None


# What a collective, or the launcher of ddp_spawn, says when another process of the run is gone.
LOST_PROCESS = re.compile(
    r"Connection (reset|closed) by peer|Broken pipe|NCCL communicator was aborted|"
    r"process \d+ terminated with (signal \w+|exit code \d+)"
)


def fit_lightning(trainer, module: LightningUGVAE) -> bool:
    """Run `trainer.fit`; whether this process is global rank 0 (the one that writes the run)."""
    with warnings.catch_warnings():
        ignore_advice_that_does_not_apply()
        try:
            trainer.fit(module, datamodule=GroupData(module))
        except Exception as e:  # RuntimeError from gloo/NCCL; torch.multiprocessing's under ddp_spawn
            lost = LOST_PROCESS.search(str(e)) if trainer.world_size > 1 else None
            if lost is None:
                raise
            raise process_lost(module, lost[0]) from None
    return trainer.is_global_zero


def ignore_advice_that_does_not_apply() -> None:
    """Lightning's advice that does not apply to this driver, kept off the console; set in the
    process that calls `fit` and in each process that ddp_spawn starts (`setup`)."""
    # The data is resident on the device: loader workers would only copy it.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # LoggedNumbers sends the windows of the run's own `log_every` itself: Lightning's interval is unused.
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    # The epoch's numbers are rank 0's, handed to every process: a sum over processes would be wrong.
    warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")


def process_lost(module: LightningUGVAE, cause: str) -> ProcessLost:
    """The one line of a run whose other process ended; the checkpoint is this process's last,
    or (under ddp_spawn, where this process did not train) the newest one on disk."""
    from ..trained.checkpoint import checkpoint_step, list_checkpoints

    run_dir, session = module.run.run_dir, module.session
    if session is not None:
        step = session.last_checkpoint_step
    else:
        steps = [checkpoint_step(path) for path in list_checkpoints(run_dir)]
        step = steps[-1] if steps else None
    if step is None:
        after = "no checkpoint was written yet: start the run again"
    else:
        after = f"the last checkpoint (step {step}) is kept in {run_dir}: continue the run with `resume` {run_dir}"
    return ProcessLost(f"training stopped: another process of the run ended ({cause}); {after}")
