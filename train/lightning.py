"""The data-parallel driver: SVI under PyTorch Lightning (DDP over torch.distributed), after Pyro's
`examples/svi_lightning.py`, with the books kept by `train.core` as on one device.

The objective is a sum of per-group ELBOs (eq. 10) and every group has its own beta, so groups
split across R processes without changing the estimator. A step draws R*G groups (one step of
the run's sampler); process r takes groups rG..(r+1)G-1, with its own Monte Carlo noise, and
computes L_r, the negative ELBO of its G groups. DDP then applies

    (1/R) sum_r grad L_r = (1/R) grad L,    L = sum_r L_r, the loss of all R*G groups,

the gradient a single process would take on the same R*G groups, scaled by 1/R (Adam is
invariant to that scale up to its eps). Rank 0 alone writes the run directory; its metrics rows
count steps of R*G*B samples. Lightning's own counters are not used: the `RunBook` counts steps
and epochs, so a resumed run starts its first epoch where the checkpoint left it.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import pyro
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import to_unit_float
from ..errors import RunError
from ..model import ModelConfig
from .checkpoints import latest_checkpoint
from .config import LaunchConfig, TrainConfig
from .core import RunBook, RunSetup, run_sampler, setup_run
from .elbo import Levers, make_elbo
from .lock import run_lock
from .rundir import load_config, new_run_dir, save_config

try:
    from lightning.pytorch import LightningDataModule, LightningModule, Trainer
    from lightning.pytorch.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
except ModuleNotFoundError:  # the optional extra `ugvae[lightning]`; fit_lightning says how to get it
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

    def __init__(self, steps, book: RunBook, rank: int, world_size: int):
        per_rank = steps.groups_per_step // world_size
        self.steps, self.book = steps, book
        self.share = slice(rank * per_rank, (rank + 1) * per_rank)

    def __len__(self) -> int:
        return self.steps.steps_per_epoch - self.book.step_in_epoch

    def __iter__(self):
        for idx in self.steps.epoch(self.book.epoch, start_step=self.book.step_in_epoch):
            yield idx[self.share]


class GroupData(LightningDataModule):
    """Training images resident on each process's device, served as that process's groups."""

    def __init__(self, run: RunSetup, module: LightningUGVAE):
        super().__init__()
        self.run, self.module = run, module

    def setup(self, stage: str):
        self.images = self.run.train_set.images.to(self.trainer.strategy.root_device)

    def train_dataloader(self) -> DataLoader:
        # Called after the module's setup, which makes the sampler and the book.
        trainer, module = self.trainer, self.module
        sampler = RankGroups(module.sampler, module.book, trainer.global_rank, trainer.world_size)
        # A private generator: iterating must not advance the global RNG that draws z and beta.
        return DataLoader(ImageGroups(self.images), sampler=sampler, batch_size=None, generator=torch.Generator())


class LightningUGVAE(LightningModule):
    """The ELBO module and its optimiser; every rank keeps a RunBook, rank 0 writes it."""

    def __init__(self, run: RunSetup, run_dir: str | None, launch: LaunchConfig, checkpoint: dict | None = None):
        super().__init__()
        self.run, self.cfg, self.launch, self.resume = run, run.train_cfg, launch, checkpoint is not None
        self.loss_fn = make_elbo(self.cfg.jit, Levers.of(self.cfg))(run.model, run.guide)
        self.run_dir, self.book, self.checkpoint_to_restore = run_dir, None, checkpoint

    def configure_optimizers(self):
        self.optimizer = torch.optim.Adam(self.loss_fn.parameters(), lr=self.cfg.lr)
        return self.optimizer

    def setup(self, stage: str):
        # Processes started by torchrun or SLURM never saw rank 0 create the directory.
        self.run_dir = self.trainer.strategy.broadcast(self.run_dir, src=0)
        cfg, world = self.cfg, self.trainer.world_size
        device = self.trainer.strategy.root_device
        self.sampler = run_sampler(self.run, cfg.groups_per_step * world, device)
        is_writer, run_id = self.trainer.is_global_zero, None
        if is_writer and not self.resume:
            run_id = save_config(
                self.run_dir, self.run.model_cfg, cfg, {"lightning": {**self.launch.to_dict(), "world_size": world}}
            )
        elif self.resume:
            run_id = load_config(self.run_dir)[2].get("run_id")
        samples = cfg.group_size * cfg.groups_per_step * world
        self.book = RunBook(self.run, self.run_dir, self.sampler, samples, writer=is_writer, run_id=run_id)
        self.test_images = self.run.test_set.images.to(device) if is_writer else None

    def on_train_start(self):
        if self.checkpoint_to_restore is not None:
            self.book.restore(self.checkpoint_to_restore, self.run.model, self.run.guide, self.optimizer)
            self.checkpoint_to_restore = None
            if self.global_rank > 0:
                # The checkpoint holds rank 0's generators: the others draw new noise from here.
                pyro.set_rng_seed(self.cfg.seed + 7919 * self.global_rank + self.book.step)
        else:
            pyro.set_rng_seed(self.cfg.seed + self.global_rank)  # different Monte Carlo noise per process

    def reduce(self, window: torch.Tensor) -> torch.Tensor:
        # A copy: the sum is written in place, and the window may still be logged later.
        return self.trainer.strategy.reduce(window.clone(), reduce_op="sum")

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        try:
            loss = self.loss_fn(to_unit_float(batch))
        except ValueError as e:
            diverged = self.book.diverged_from(e)
            if diverged is None:
                raise
            raise diverged from None
        self.book.record(loss)
        return loss

    def on_train_epoch_start(self):
        self.book.start_clock()

    def on_train_batch_end(self, outputs, batch, batch_idx: int):
        book = self.book
        if book.log_due:
            book.log(self.reduce)
        if book.checkpoint_due:
            self.checkpoint()

    def on_train_epoch_end(self):
        self.book.stop_clock()
        self.book.end_epoch(self.run.model, self.run.guide, self.test_images, self.run.train_set.images)
        self.checkpoint()

    def on_train_end(self):
        self.book.write_summary(world_size=self.trainer.world_size)

    def checkpoint(self):
        """Every rank checks the state (the window is summed over them), rank 0 writes it."""
        self.book.checkpoint(self.run.model, self.run.guide, self.optimizer, self.loss_fn.parameters(), self.reduce)


def launched_as_rank_zero() -> bool:
    """Whether this process will be global rank 0: the one a user starts (Lightning spawns or
    re-runs the others with LOCAL_RANK set), or rank 0 of torchrun / SLURM."""
    return rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0"


def fit_lightning(
    train_cfg: TrainConfig,
    model_cfg: ModelConfig | None,
    launch: LaunchConfig,
    runs_dir: str = "runs",
    callbacks=(),
    quiet: bool = False,
    resume_dir: str | None = None,
) -> str | None:
    """Train a new run under Lightning, or continue the one in `resume_dir`.

    Returns the run directory on global rank 0 and None on the other ranks, so that a caller
    re-run by Lightning's `ddp` launcher draws its reports once.
    """
    if Trainer is None:
        raise RunError("--strategy needs PyTorch Lightning; install it with pip install 'ugvae[lightning]'")
    if resume_dir:
        model_cfg, train_cfg, _ = load_config(resume_dir)
    if train_cfg.groups.startswith("clusters"):  # the refresh of assignments is untested across processes
        raise RunError("--groups clusters:ALPHA is not supported with --strategy yet; train on one device")
    run = setup_run(train_cfg, model_cfg, quiet)
    ckpt = None
    if resume_dir:
        ckpt = latest_checkpoint(resume_dir, load_config(resume_dir)[2].get("run_id"))
        if ckpt is None:
            raise RunError(f"{resume_dir} has no readable checkpoint to resume from; start a new run instead")
    try:
        trainer = Trainer(
            **launch.to_dict(),
            max_epochs=max(train_cfg.epochs - (ckpt["epoch"] if ckpt else 0), 0),
            gradient_clip_val=train_cfg.clip_norm,
            use_distributed_sampler=False,  # RankGroups already splits every step's groups
            reload_dataloaders_every_n_epochs=1,  # a resumed first epoch is shorter than the others
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=not quiet,
            callbacks=list(callbacks),
        )
    except (MisconfigurationException, ValueError, TypeError) as e:
        raise RunError(
            f"Lightning rejected the launch options ({e}); check --strategy, --devices, --num-nodes and --accelerator"
        ) from None
    if resume_dir:
        run_dir = resume_dir
    else:
        run_dir = new_run_dir(runs_dir, train_cfg.dataset, train_cfg.model) if launched_as_rank_zero() else None
    module = LightningUGVAE(run, run_dir, launch, checkpoint=ckpt)
    # Only rank 0 writes, so only it holds the run's lock.
    lock = run_lock(run_dir, new=not resume_dir) if run_dir and launched_as_rank_zero() else contextlib.nullcontext()
    with lock, warnings.catch_warnings():
        # The data is resident on the device: loader workers would only copy it.
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(module, datamodule=GroupData(run, module))
    return module.run_dir if trainer.is_global_zero else None
