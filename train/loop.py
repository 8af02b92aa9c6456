"""Fitting a model by SVI, with the ELBO summed over groups (eq. 10) and d enumerated.

The loss is Pyro's `TraceEnum_ELBO` (or its JIT version) used as a module, as in Pyro's
Lightning example: `elbo(model, guide)` is an `nn.Module` whose forward is the
differentiable loss, optimised by a `torch.optim.Adam`. It is the same estimator as
`SVI.step`, but the optimiser state is a plain state_dict (exact resume), gradients can be
clipped, the loss never leaves the device between logs, and DDP can wrap it.
"""
from __future__ import annotations

import json
import math
import os
import time

import pyro
import torch
from pyro.infer import JitTraceEnum_ELBO, TraceEnum_ELBO
from tqdm.auto import tqdm

from data import MixedGroups, RandomGroups, load_dataset
from model import UGVAEConfig
from train.config import TrainConfig
from train.metrics import MetricsLog, cluster_usage
from train.runs import (
    RunError, build, check_compatible, default_guide, latest_checkpoint, new_run_dir,
    rng_state, save_checkpoint, save_config, set_rng_state,
)


class TrainingDiverged(RuntimeError):
    pass


def make_elbo(jit: bool):
    cls = JitTraceEnum_ELBO if jit else TraceEnum_ELBO
    # The JIT ELBO checks its traced graph against the eager one; one warning is enough.
    return cls(max_plate_nesting=2, ignore_jit_warnings=True) if jit else cls(max_plate_nesting=2)


def fixed_groups(n: int, group_size: int, seed: int = 0) -> torch.Tensor:
    """A fixed random partition of n test samples into groups (num_groups, B)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    usable = n // group_size * group_size
    if usable == 0:
        raise RunError(f"the test split has {n} samples, fewer than one group of {group_size}; lower --group-size")
    return perm[:usable].view(-1, group_size)


@torch.no_grad()
def evaluate(model, guide, images: torch.Tensor, groups: torch.Tensor, chunk: int = 16) -> dict:
    """Per-sample test ELBO (nats) and, for mixture models, cluster usage on `groups` of images."""
    model.eval(), guide.eval()
    elbo, total, pis = TraceEnum_ELBO(max_plate_nesting=2), 0.0, []
    for idx in groups.split(chunk):
        x = images[idx.to(images.device)].float().div_(255)
        total += elbo.loss(model, guide, x)
        pi = guide.local_posterior(x)[2]
        if pi is not None:
            pis.append(pi.reshape(-1, pi.shape[-1]).cpu())
    model.train(), guide.train()
    out = {"test_elbo": -total / groups.numel()}
    if pis:
        out.update(cluster_usage(torch.cat(pis)))
    return out


class Trainer:
    """One run: data on the device, model and guide, optimiser, run directory."""

    def __init__(self, train_cfg: TrainConfig, run_dir: str, model_cfg: UGVAEConfig | None = None,
                 resume: bool = False, quiet: bool = False):
        self.cfg, self.run_dir, self.quiet = train_cfg, run_dir, quiet
        if train_cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise RunError("--device cuda was asked for but CUDA is not available; use --device cpu")
        self.device = torch.device(train_cfg.device)
        pyro.set_rng_seed(train_cfg.seed)
        train_set = load_dataset(train_cfg.dataset, "train", train_cfg.data_dir, train_cfg.image_size)
        test_set = load_dataset(train_cfg.dataset, "test", train_cfg.data_dir, train_cfg.image_size)
        if train_set.notice and not quiet:
            tqdm.write(train_set.notice)
        self.model_cfg = model_cfg or UGVAEConfig(x_shape=train_set.x_shape)
        if self.model_cfg.x_shape != tuple(train_set.x_shape):
            raise RunError(f"the model expects images of shape {self.model_cfg.x_shape} but {train_cfg.dataset} "
                           f"has {tuple(train_set.x_shape)}; pass --image-size or build the config from the data")
        self.guide_name = train_cfg.guide or default_guide(train_cfg.model)
        self.model, self.guide = build(self.model_cfg, train_cfg.model, self.guide_name)
        self.model.to(self.device), self.guide.to(self.device)
        # uint8 keeps the whole training set resident on the device at a quarter of the size.
        self.images = train_set.images.to(self.device)
        self.test_images = test_set.images.to(self.device)
        self.test_groups = fixed_groups(len(test_set), train_cfg.group_size)
        G, B = train_cfg.groups_per_step, train_cfg.group_size
        if train_set.domains is not None and train_cfg.mix is not None:
            self.sampler = MixedGroups(train_set.domains, B, G, train_cfg.mix, train_cfg.seed, self.device)
        else:
            self.sampler = RandomGroups(len(train_set), B, G, train_cfg.seed, self.device)
        self.loss_fn = make_elbo(train_cfg.jit)(self.model, self.guide)
        self.optimizer = torch.optim.Adam(self.loss_fn.parameters(), lr=train_cfg.lr)
        self.step, self.epoch, self.step_in_epoch, self.train_seconds = 0, 0, 0, 0.0
        if resume:
            self._resume()
        else:
            save_config(run_dir, self.model_cfg, train_cfg,
                        {"model_name": train_cfg.model, "guide_name": self.guide_name})
        self.metrics = MetricsLog(os.path.join(run_dir, "metrics.csv"))
        if resume:
            self.metrics.truncate_after(self.step)

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint(self):
        payload = {
            "step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "train_seconds": self.train_seconds,
            "model": self.model.state_dict(), "guide": self.guide.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": rng_state(),
            "config": {"model": self.model_cfg.to_dict(), "model_name": self.cfg.model,
                       "guide_name": self.guide_name, "train": self.cfg.to_dict()},
        }
        save_checkpoint(self.run_dir, self.step, payload, self.cfg.keep_checkpoints)

    def _resume(self):
        ckpt = latest_checkpoint(self.run_dir, map_location=self.device)
        if ckpt is None:
            raise RunError(f"{self.run_dir} has no readable checkpoint to resume from; start a new run instead")
        check_compatible(ckpt, self.model_cfg, self.cfg.model, self.guide_name)
        self.model.load_state_dict(ckpt["model"])
        self.guide.load_state_dict(ckpt["guide"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        self.step, self.epoch, self.step_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["step_in_epoch"]
        self.train_seconds = ckpt.get("train_seconds", 0.0)

    # -- training ----------------------------------------------------------------------
    def train_step(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.images[idx].float().div_(255)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(x)
        loss.backward()
        if self.cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.loss_fn.parameters(), self.cfg.clip_norm)
        self.optimizer.step()
        return loss.detach()

    def fit(self, writer=None) -> dict:
        cfg, per_step = self.cfg, self.sampler.steps_per_epoch
        samples_per_step = cfg.group_size * cfg.groups_per_step
        bar = tqdm(total=cfg.epochs * per_step, initial=self.step, disable=self.quiet,
                   desc=os.path.basename(self.run_dir), unit="step", dynamic_ncols=True)
        result = {}
        while self.epoch < cfg.epochs:
            window, n_window, t0 = torch.zeros((), device=self.device), 0, time.perf_counter()
            epoch_sum, epoch_n = 0.0, 0
            for idx in self.sampler.epoch(self.epoch, start_step=self.step_in_epoch):
                window += self.train_step(idx)
                n_window += 1
                self.step += 1
                self.step_in_epoch += 1
                bar.update()
                if self.step % cfg.log_every == 0 or self.step_in_epoch == per_step:
                    mean_loss = window.item() / n_window  # the one host-device sync of a window
                    self._check_finite(mean_loss, n_window)
                    train_elbo = -mean_loss / samples_per_step
                    epoch_sum, epoch_n = epoch_sum + mean_loss * n_window, epoch_n + n_window
                    self.metrics.write(step=self.step, epoch=self.epoch, train_elbo=train_elbo)
                    bar.set_postfix(epoch=self.epoch, elbo=f"{train_elbo:.2f}")
                    if writer:
                        writer.add_scalar("train/elbo", train_elbo, self.step)
                    window.zero_()
                    n_window = 0
                if self.step % cfg.checkpoint_every == 0 and self.step_in_epoch < per_step:
                    self.train_seconds += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self.checkpoint()
            self.train_seconds += time.perf_counter() - t0
            result = evaluate(self.model, self.guide, self.test_images, self.test_groups)
            result["train_elbo"] = -epoch_sum / max(epoch_n, 1) / samples_per_step
            self.metrics.write(step=self.step, epoch=self.epoch, elapsed_s=round(self.train_seconds, 3),
                               **{k: v for k, v in result.items() if k != "cluster_shares"})
            if writer:
                for k in ("test_elbo", "cluster_entropy", "clusters_used"):
                    if k in result:
                        writer.add_scalar(f"test/{k.replace('test_', '')}", result[k], self.step)
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
            self.checkpoint()
        bar.close()
        summary = {"steps": self.step, "epochs": self.epoch, "train_seconds": round(self.train_seconds, 2),
                   "seconds_per_epoch": round(self.train_seconds / max(self.epoch, 1), 4), **result}
        with open(os.path.join(self.run_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        return summary

    def _check_finite(self, mean_loss: float, n_window: int):
        if math.isfinite(mean_loss):
            return
        first = self.step - n_window + 1
        raise TrainingDiverged(
            f"the ELBO became {mean_loss} between steps {first} and {self.step}; the last good checkpoint "
            f"is kept in {self.run_dir}/checkpoints. Likely causes: a learning rate too high (try --lr "
            f"{self.cfg.lr / 10:g}), exploding variances (try --clip-norm 10), or images outside [0, 1]."
        )


def train(train_cfg: TrainConfig, runs_dir: str = "runs", model_cfg: UGVAEConfig | None = None,
          quiet: bool = False, writer_factory=None) -> str:
    """Train a new run under `runs_dir`; returns its directory."""
    run_dir = new_run_dir(runs_dir, train_cfg.dataset, train_cfg.model)
    trainer = Trainer(train_cfg, run_dir, model_cfg, quiet=quiet)
    writer = writer_factory(run_dir) if writer_factory else None
    trainer.fit(writer)
    return run_dir


def resume(run_dir: str, quiet: bool = False, device: str | None = None) -> str:
    """Continue a killed run from its newest good checkpoint, in the same directory."""
    from train.runs import load_config

    model_cfg, train_cfg, _ = load_config(run_dir)
    if device:
        train_cfg.device = device
    Trainer(train_cfg, run_dir, model_cfg, resume=True, quiet=quiet).fit()
    return run_dir
