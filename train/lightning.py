"""Data-parallel SVI under PyTorch Lightning (DDP over torch.distributed), after Pyro's
`examples/svi_lightning.py`: the ELBO module (`make_elbo(jit)(model, guide)`) is optimised by
`torch.optim.Adam` in a `LightningModule`, and Lightning's DDP averages the gradients.

The objective is a sum of per-group ELBOs (eq. 10) and every group has its own beta, so
groups split across R processes without changing the estimator. A step draws R*G groups
(one step of `RandomGroups` or `MixedGroups`); process r takes groups rG..(r+1)G-1, with its
own Monte Carlo noise, and computes L_r, the negative ELBO of its G groups. DDP then applies

    (1/R) sum_r grad L_r = (1/R) grad L,    L = sum_r L_r, the loss of all R*G groups,

the gradient a single process would take on the same R*G groups, scaled by 1/R (Adam is
invariant to that scale up to its eps). Rank 0 alone writes the run directory that
`train.loop` writes: config.json, checkpoints/ (read by `load_run`), metrics.csv and
summary.json, with one row of metrics per step of R*G*B samples.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings

import pyro
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data import MixedGroups, RandomGroups, load_dataset
from model import UGVAEConfig
from train.config import TrainConfig
from train.loop import TrainingDiverged, evaluate, fixed_groups, group_sampler, make_elbo
from train.metrics import MetricsLog
from train.runs import (
    RunError,
    atomic_write_bytes,
    build,
    default_guide,
    new_run_dir,
    rng_state,
    save_checkpoint,
    save_config,
)

try:
    from lightning.pytorch import LightningDataModule, LightningModule, Trainer
    from lightning.pytorch.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
except ModuleNotFoundError:  # the optional extra `ugvae[lightning]`; fit_lightning says how to get it
    LightningDataModule = LightningModule = object
    Trainer = None


def add_arguments(group):
    """The launch options of the Lightning path; without --strategy the single-process loop runs."""
    group.add_argument(
        "--strategy",
        default=None,
        help="train under PyTorch Lightning with this strategy: ddp (one process per "
        "device; also under torchrun or SLURM), ddp_spawn, auto",
    )
    group.add_argument("--devices", default="auto", help="devices per node: a count, a list like 0,1, or auto")
    group.add_argument("--num-nodes", type=int, default=1, help="machines taking part in the run")
    group.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")


class ImageGroups(Dataset):
    """uint8 images indexed by a (G, B) index tensor: one item is all the groups of a step."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx]

    def __len__(self) -> int:
        return len(self.images)


class RankGroups(Sampler):
    """This process's G of the R*G groups that each step of `steps` draws."""

    def __init__(self, steps: RandomGroups | MixedGroups, rank: int, world_size: int):
        per_rank = steps.groups_per_step // world_size
        self.steps, self.share, self.epoch = steps, slice(rank * per_rank, (rank + 1) * per_rank), 0

    def set_epoch(self, epoch: int):  # Lightning calls it before each epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        for idx in self.steps.epoch(self.epoch):
            yield idx[self.share]


class GroupData(LightningDataModule):
    """Training images resident on each process's device, served as that process's groups."""

    def __init__(self, train_cfg: TrainConfig, train_set):
        super().__init__()
        self.cfg, self.train_set = train_cfg, train_set

    def setup(self, stage: str):
        cfg, trainer, images = self.cfg, self.trainer, self.train_set.images
        device, groups = trainer.strategy.root_device, cfg.groups_per_step * trainer.world_size
        steps = group_sampler(self.train_set, cfg, groups, device)
        self.sampler = RankGroups(steps, trainer.global_rank, trainer.world_size)
        self.images = images.to(device)

    def train_dataloader(self) -> DataLoader:
        # A private generator: iterating must not advance the global RNG that draws z and beta.
        return DataLoader(ImageGroups(self.images), sampler=self.sampler, batch_size=None, generator=torch.Generator())


class LightningUGVAE(LightningModule):
    """The ELBO module and its optimiser; rank 0 keeps the run directory."""

    def __init__(
        self,
        loss_fn,
        train_cfg: TrainConfig,
        model_cfg: UGVAEConfig,
        guide_name: str,
        test_set,
        run_dir: str | None,
        launch: dict,
    ):
        super().__init__()
        self.loss_fn, self.model, self.guide = loss_fn, loss_fn.model, loss_fn.guide
        self.cfg, self.model_cfg, self.guide_name, self.launch = train_cfg, model_cfg, guide_name, launch
        self.test_images, self.test_groups = test_set.images, fixed_groups(len(test_set), train_cfg.group_size)
        self.run_dir, self.metrics, self.last_result, self.train_seconds = run_dir, None, {}, 0.0

    def configure_optimizers(self):
        return torch.optim.Adam(self.loss_fn.parameters(), lr=self.cfg.lr)

    def setup(self, stage: str):
        # Processes started by torchrun or SLURM never saw rank 0 create the directory.
        self.run_dir = self.trainer.strategy.broadcast(self.run_dir, src=0)
        pyro.set_rng_seed(self.cfg.seed + self.global_rank)  # different Monte Carlo noise per process
        device = self.trainer.strategy.root_device
        self.samples_per_step = self.cfg.group_size * self.cfg.groups_per_step * self.trainer.world_size
        # Losses of the steps since the last log stay on the device, as in train.loop.
        self.window, self.n_window, self.epoch_loss = torch.zeros(self.cfg.log_every, device=device), 0, (0.0, 0)
        if self.trainer.is_global_zero:
            self.test_images = self.test_images.to(device)
            save_config(
                self.run_dir,
                self.model_cfg,
                self.cfg,
                {
                    "model_name": self.cfg.model,
                    "guide_name": self.guide_name,
                    "lightning": {**self.launch, "world_size": self.trainer.world_size},
                },
            )
            self.metrics = MetricsLog(os.path.join(self.run_dir, "metrics.csv"))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.loss_fn(batch.float().div_(255))
        self.window[self.n_window] = loss.detach()
        self.n_window += 1
        return loss

    def on_train_epoch_start(self):
        self.epoch_t0 = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx: int):
        cfg, step = self.cfg, self.global_step
        last = batch_idx + 1 == self.trainer.num_training_batches
        if step % cfg.log_every == 0 or last:
            losses = self.pending_losses()
            self.n_window, self.epoch_loss = 0, (self.epoch_loss[0] + sum(losses), self.epoch_loss[1] + len(losses))
            if self.metrics:
                self.metrics.write(
                    step=step, epoch=self.current_epoch, train_elbo=-sum(losses) / len(losses) / self.samples_per_step
                )
        if step % cfg.checkpoint_every == 0 and not last:
            self.checkpoint(self.current_epoch, batch_idx + 1)

    def on_train_epoch_end(self):
        self.train_seconds += time.perf_counter() - self.epoch_t0
        if self.trainer.is_global_zero:
            result = evaluate(self.model, self.guide, self.test_images, self.test_groups)
            result["train_elbo"] = -self.epoch_loss[0] / max(self.epoch_loss[1], 1) / self.samples_per_step
            self.metrics.write(
                step=self.global_step,
                epoch=self.current_epoch,
                elapsed_s=round(self.train_seconds, 3),
                **{k: v for k, v in result.items() if k != "cluster_shares"},
            )
            self.last_result = result
        self.epoch_loss = (0.0, 0)
        self.checkpoint(self.current_epoch + 1, 0)

    def on_train_end(self):
        if not self.trainer.is_global_zero:
            return
        epochs = self.current_epoch  # already advanced past the last finished epoch
        summary = {
            "steps": self.global_step,
            "epochs": epochs,
            "train_seconds": round(self.train_seconds, 2),
            "seconds_per_epoch": round(self.train_seconds / max(epochs, 1), 4),
            "world_size": self.trainer.world_size,
            **self.last_result,
        }
        atomic_write_bytes(os.path.join(self.run_dir, "summary.json"), json.dumps(summary, indent=2).encode())

    def pending_losses(self) -> list[float]:
        """Losses of all R*G groups for each step not yet logged; every rank must call it."""
        if self.n_window == 0:
            return []
        # A copy: the sum is written in place, and the window may still be logged later.
        losses = self.trainer.strategy.reduce(self.window[: self.n_window].clone(), reduce_op="sum").tolist()
        bad = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
        if bad is not None:
            raise TrainingDiverged(
                f"training diverged at step {self.global_step - len(losses) + 1 + bad}: the "
                f"ELBO became {losses[bad]}; the last good checkpoint is kept in {self.run_dir}. "
                f"Try --lr {self.cfg.lr / 10:g} or --clip-norm 10"
            )
        return losses

    def checkpoint(self, epoch: int, step_in_epoch: int):
        """The payload of `train.loop.Trainer.checkpoint`; every rank checks it, rank 0 writes it."""
        window = self.pending_losses()
        if not self.trainer.is_global_zero:
            return
        payload = {
            "step": self.global_step,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "train_seconds": self.train_seconds,
            "last_result": self.last_result,
            "window": torch.tensor(window),
            "epoch_loss": self.epoch_loss,
            "model": self.model.state_dict(),
            "guide": self.guide.state_dict(),
            "optimizer": self.trainer.optimizers[0].state_dict(),
            "rng": rng_state(),
            "config": {
                "model": self.model_cfg.to_dict(),
                "model_name": self.cfg.model,
                "guide_name": self.guide_name,
                "train": self.cfg.to_dict(),
            },
        }
        save_checkpoint(self.run_dir, self.global_step, payload, self.cfg.keep_checkpoints)


def launched_as_rank_zero() -> bool:
    """Whether this process will be global rank 0: the one a user starts (Lightning spawns or
    re-runs the others with LOCAL_RANK set), or rank 0 of torchrun / SLURM."""
    return rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0"


def fit_lightning(
    train_cfg: TrainConfig, model_cfg: UGVAEConfig | None, args, runs_dir: str = "runs", callbacks=()
) -> str | None:
    """Train a new run under Lightning with `args.strategy`, `devices`, `num_nodes`, `accelerator`.

    Returns the run directory on global rank 0 and None on the other ranks, so that a caller
    re-run by Lightning's `ddp` launcher draws its reports once.
    """
    if Trainer is None:
        raise RunError("--strategy needs PyTorch Lightning; install it with pip install 'ugvae[lightning]'")
    if args.num_nodes < 1:
        raise RunError(f"--num-nodes must be >= 1, got {args.num_nodes}")
    if train_cfg.groups.startswith("clusters"):  # no epoch-end refresh of assignments here yet
        raise RunError("--groups clusters:ALPHA is not supported with --strategy yet; train on one device")
    pyro.clear_param_store()
    pyro.set_rng_seed(train_cfg.seed)  # equal initial weights everywhere; DDP broadcasts rank 0's anyway
    train_set = load_dataset(train_cfg.dataset, "train", train_cfg.data_dir, train_cfg.image_size)
    test_set = load_dataset(train_cfg.dataset, "test", train_cfg.data_dir, train_cfg.image_size)
    model_cfg = model_cfg or UGVAEConfig(x_shape=train_set.x_shape)
    if model_cfg.x_shape != tuple(train_set.x_shape):
        raise RunError(
            f"the model expects images of shape {model_cfg.x_shape} but {train_cfg.dataset} "
            f"has {tuple(train_set.x_shape)}; pass --image-size or build the config from the data"
        )
    guide_name = train_cfg.guide or default_guide(train_cfg.model)
    model, guide = build(model_cfg, train_cfg.model, guide_name)
    launch = {k: getattr(args, k) for k in ("strategy", "devices", "num_nodes", "accelerator")}
    try:
        trainer = Trainer(
            **launch,
            max_epochs=train_cfg.epochs,
            gradient_clip_val=train_cfg.clip_norm,
            use_distributed_sampler=False,  # RankGroups already splits every step's groups
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=not getattr(args, "quiet", False),
            callbacks=list(callbacks),
        )
    except (MisconfigurationException, ValueError, TypeError) as e:
        raise RunError(
            f"Lightning rejected the launch options ({e}); check --strategy, --devices, --num-nodes and --accelerator"
        ) from None
    run_dir = new_run_dir(runs_dir, train_cfg.dataset, train_cfg.model) if launched_as_rank_zero() else None
    module = LightningUGVAE(
        make_elbo(train_cfg.jit)(model, guide), train_cfg, model_cfg, guide_name, test_set, run_dir, launch
    )
    with warnings.catch_warnings():
        # The data is resident on the device: loader workers would only copy it.
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(module, datamodule=GroupData(train_cfg, train_set))
    return module.run_dir if trainer.is_global_zero else None
