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
import re
import time
import warnings
from dataclasses import replace

import pyro
import torch
from pyro.infer import JitTraceEnum_ELBO, TraceEnum_ELBO
from tqdm.auto import tqdm

from data import load_dataset, own_groups, training_groups
from model import UGVAEConfig
from train.config import TrainConfig
from train.diagnostics import beta_diagnostics, cluster_assignments, inactive_beta_message
from train.metrics import MetricsLog, cluster_usage
from train.runs import (
    RunError,
    atomic_write_bytes,
    build,
    check_compatible,
    claim_run_dir,
    default_guide,
    latest_checkpoint,
    load_config,
    new_run_dir,
    resolve_device,
    rng_state,
    save_checkpoint,
    save_config,
    set_rng_state,
)

# torch.distributions' validation message for a parameter outside its constraint.
INVALID_PARAMETER_RE = re.compile(r"Expected parameter (\w+) .*? of distribution (\w+).*found invalid values", re.S)


class TrainingDiverged(RuntimeError):
    """The ELBO or the weights became NaN/inf; the message names the step and the checkpoint kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says how to continue the run."""


# Models without a discrete site (VAE, ML-VAE) share the loop: for them TraceEnum_ELBO is
# Trace_ELBO, and its warning that nothing is enumerated is expected.
warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites configured for enumeration")


def make_elbo(jit: bool):
    cls = JitTraceEnum_ELBO if jit else TraceEnum_ELBO
    # The JIT ELBO checks its traced graph against the eager one; one warning is enough.
    return cls(max_plate_nesting=2, ignore_jit_warnings=True) if jit else cls(max_plate_nesting=2)


def group_sampler(train_set, cfg: TrainConfig, groups_per_step: int, device):
    """Training groups as `cfg.groups` asks (random, labels:ALPHA, clusters:ALPHA; see data/training_groups.py)."""
    return training_groups(
        cfg.groups, train_set, cfg.group_size, groups_per_step, cfg.seed, device, cfg.mix, cfg.group_warmup
    )


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
    """One run: data on the device, model and guide, optimiser, and the position in the data.

    Building one writes nothing, so bad input leaves no run directory behind; `start` begins a
    new run in a directory, `restore` continues a killed one from its newest good checkpoint.
    A checkpoint holds everything a step depends on (weights, Adam moments, RNG states, epoch
    and step within it, the losses of steps not yet logged), so on the same device a resumed
    run repeats the losses of an uninterrupted one exactly.
    """

    def __init__(self, train_cfg: TrainConfig, model_cfg: UGVAEConfig | None = None, quiet: bool = False):
        self.cfg, self.quiet, self.run_dir = train_cfg, quiet, None
        self.device = resolve_device(train_cfg.device)
        # Pyro's param store is global: names left by an earlier model in this process would
        # shadow this run's parameters (and break the JIT ELBO's tracing).
        pyro.clear_param_store()
        pyro.set_rng_seed(train_cfg.seed)
        train_set = load_dataset(train_cfg.dataset, "train", train_cfg.data_dir, train_cfg.image_size)
        test_set = load_dataset(train_cfg.dataset, "test", train_cfg.data_dir, train_cfg.image_size)
        if train_set.notice and not quiet:
            tqdm.write(train_set.notice)
        self.model_cfg = model_cfg or UGVAEConfig(x_shape=train_set.x_shape)
        if self.model_cfg.x_shape != tuple(train_set.x_shape):
            raise RunError(
                f"the model expects images of shape {self.model_cfg.x_shape} but {train_cfg.dataset} "
                f"has {tuple(train_set.x_shape)}; pass --image-size or build the config from the data"
            )
        self.guide_name = train_cfg.guide or default_guide(train_cfg.model)
        self.model, self.guide = build(self.model_cfg, train_cfg.model, self.guide_name)
        self.model.to(self.device), self.guide.to(self.device)
        # uint8 keeps the whole training set resident on the device at a quarter of the size.
        self.images = train_set.images.to(self.device)
        self.test_images = test_set.images.to(self.device)
        self.test_groups = fixed_groups(len(test_set), train_cfg.group_size)
        # beta is read on groups that share something when the data has such groups.
        self.diagnostic_groups = own_groups(test_set, train_cfg.group_size)
        if self.diagnostic_groups is None:
            self.diagnostic_groups = self.test_groups
        self.sampler = group_sampler(train_set, train_cfg, train_cfg.groups_per_step, self.device)
        self.loss_fn = make_elbo(train_cfg.jit)(self.model, self.guide)
        self.optimizer = torch.optim.Adam(self.loss_fn.parameters(), lr=train_cfg.lr)
        self.step, self.epoch, self.step_in_epoch, self.train_seconds = 0, 0, 0, 0.0
        # Losses of the steps since the last log stay on the device: logging is the only sync.
        self.window, self.n_window = torch.zeros(train_cfg.log_every, device=self.device), 0
        self.epoch_loss_sum, self.epoch_loss_steps = 0.0, 0
        self.last_result, self.last_checkpoint_step = {}, None

    def start(self, run_dir: str):
        self.run_dir = run_dir
        save_config(run_dir, self.model_cfg, self.cfg, {"model_name": self.cfg.model, "guide_name": self.guide_name})
        self.metrics = MetricsLog(os.path.join(run_dir, "metrics.csv"))

    def restore(self, run_dir: str):
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise RunError(f"{run_dir} has no readable checkpoint to resume from; start a new run instead")
        check_compatible(ckpt, self.model_cfg, self.cfg.model, self.guide_name, self.cfg)
        if ckpt.get("train_samples", len(self.images)) != len(self.images):
            raise RunError(
                f"{self.cfg.dataset} now has {len(self.images)} training images but had "
                f"{ckpt['train_samples']} at the checkpoint; restore the data or start a new run"
            )
        self.model.load_state_dict(ckpt["model"])
        self.guide.load_state_dict(ckpt["guide"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        self.step, self.epoch, self.step_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["step_in_epoch"]
        self.train_seconds, self.last_result = ckpt["train_seconds"], ckpt["last_result"]
        pending = ckpt["window"]
        self.window[: len(pending)], self.n_window = pending.to(self.device), len(pending)
        self.epoch_loss_sum, self.epoch_loss_steps = ckpt["epoch_loss"]
        if ckpt.get("group_assignments") is not None:
            self.sampler.set_assignments(ckpt["group_assignments"])
        self.run_dir, self.last_checkpoint_step = run_dir, self.step
        self.metrics = MetricsLog(os.path.join(run_dir, "metrics.csv"))
        self.metrics.truncate_after(self.step)  # the resumed run logs these steps again
        if not self.quiet:
            tqdm.write(f"resuming {run_dir} from step {self.step} (epoch {self.epoch})")

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint(self):
        # A checkpoint must be a good one to fall back to: check what no log has checked yet.
        self._check_finite(self.window[: self.n_window].tolist())
        if not torch.stack([p.isfinite().all() for p in self.loss_fn.parameters()]).all():
            raise self._diverged(self.step, "the weights became NaN/inf")
        payload = {
            "step": self.step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "train_seconds": self.train_seconds,
            "last_result": self.last_result,
            "train_samples": len(self.images),
            "window": self.window[: self.n_window].cpu(),
            "epoch_loss": (self.epoch_loss_sum, self.epoch_loss_steps),
            "group_assignments": self.sampler.assignments,  # clusters:ALPHA groups of the epoch under way
            "model": self.model.state_dict(),
            "guide": self.guide.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(),
            "config": {
                "model": self.model_cfg.to_dict(),
                "model_name": self.cfg.model,
                "guide_name": self.guide_name,
                "train": self.cfg.to_dict(),
            },
        }
        save_checkpoint(self.run_dir, self.step, payload, self.cfg.keep_checkpoints)
        self.last_checkpoint_step = self.step

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

    def _guarded_step(self, idx: torch.Tensor) -> torch.Tensor:
        try:
            return self.train_step(idx)
        except ValueError as e:
            # With Pyro's validation on (its default), divergence shows up first as a distribution
            # built from NaN/inf/zero scales rather than as a NaN loss.
            invalid = INVALID_PARAMETER_RE.search(str(e))
            if invalid is None:
                raise
            raise self._diverged(
                self.step + 1, f"the {invalid[1]} of a {invalid[2]} distribution became invalid (NaN, inf or zero)"
            ) from None

    def fit(self, writer=None) -> dict:
        cfg, per_epoch = self.cfg, self.sampler.steps_per_epoch
        if self.epoch >= cfg.epochs and not self.quiet:
            tqdm.write(f"{self.run_dir} has already finished its {cfg.epochs} epochs; writing its summary again")
        bar = tqdm(
            total=cfg.epochs * per_epoch,
            initial=self.step,
            disable=self.quiet,
            desc=os.path.basename(self.run_dir),
            unit="step",
            dynamic_ncols=True,
        )
        try:
            while self.epoch < cfg.epochs:
                t0 = time.perf_counter()
                for idx in self.sampler.epoch(self.epoch, start_step=self.step_in_epoch):
                    self.window[self.n_window] = self._guarded_step(idx)
                    self.n_window += 1
                    self.step += 1
                    self.step_in_epoch += 1
                    bar.update()
                    if self.step % cfg.log_every == 0 or self.step_in_epoch == per_epoch:
                        self._log(bar, writer)
                    if self.step % cfg.checkpoint_every == 0 and self.step_in_epoch < per_epoch:
                        self.train_seconds, t0 = self.train_seconds + time.perf_counter() - t0, time.perf_counter()
                        self.checkpoint()
                self.train_seconds += time.perf_counter() - t0
                self._end_epoch(writer)
                if self.sampler.reads_assignments and cfg.group_warmup <= self.epoch < cfg.epochs:
                    self.sampler.set_assignments(cluster_assignments(self.guide, self.images))
                self.checkpoint()
        except KeyboardInterrupt:
            how = (
                "start again"
                if self.last_checkpoint_step is None
                else f"continue with `python run.py --resume {self.run_dir}`"
            )
            stopped = f"training stopped at step {self.step}; {self._checkpoint_kept()}; {how}"
            raise TrainingInterrupted(stopped) from None
        finally:
            bar.close()
        if inactive := inactive_beta_message(self.last_result):
            tqdm.write(inactive)
        summary = {
            "steps": self.step,
            "epochs": self.epoch,
            "train_seconds": round(self.train_seconds, 2),
            "seconds_per_epoch": round(self.train_seconds / max(self.epoch, 1), 4),
            **self.last_result,
        }
        atomic_write_bytes(os.path.join(self.run_dir, "summary.json"), json.dumps(summary, indent=2).encode())
        return summary

    def _log(self, bar, writer):
        losses = self.window[: self.n_window].tolist()  # the one host-device sync of a window
        self._check_finite(losses)
        train_elbo = -sum(losses) / len(losses) / (self.cfg.group_size * self.cfg.groups_per_step)
        self.epoch_loss_sum += sum(losses)
        self.epoch_loss_steps += len(losses)
        self.n_window = 0
        self.metrics.write(step=self.step, epoch=self.epoch, train_elbo=train_elbo)
        bar.set_postfix(epoch=self.epoch, elbo=f"{train_elbo:.2f}")
        if writer:
            writer.add_scalar("train/elbo", train_elbo, self.step)

    def _end_epoch(self, writer):
        result = evaluate(self.model, self.guide, self.test_images, self.test_groups)
        result.update(beta_diagnostics(self.model, self.guide, self.test_images, self.diagnostic_groups))
        samples = self.cfg.group_size * self.cfg.groups_per_step
        result["train_elbo"] = -self.epoch_loss_sum / max(self.epoch_loss_steps, 1) / samples
        self.metrics.write(
            step=self.step,
            epoch=self.epoch,
            elapsed_s=round(self.train_seconds, 3),
            **{k: v for k, v in result.items() if k != "cluster_shares"},
        )
        if writer:
            for k in ("test_elbo", "cluster_entropy", "clusters_used"):
                if k in result:
                    writer.add_scalar(f"test/{k.replace('test_', '')}", result[k], self.step)
        self.last_result, self.epoch_loss_sum, self.epoch_loss_steps = result, 0.0, 0
        self.epoch, self.step_in_epoch = self.epoch + 1, 0

    def _check_finite(self, losses: list[float]):
        bad = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
        if bad is not None:
            # losses[-1] belongs to self.step, so losses[bad] to the step counted back from it.
            raise self._diverged(self.step - len(losses) + 1 + bad, f"the ELBO became {losses[bad]}")

    def _diverged(self, step: int, what: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"training diverged at step {step}: {what}; {self._checkpoint_kept()}. Likely causes: a learning "
            f"rate too high (try --lr {self.cfg.lr / 10:g}), exploding gradients (try --clip-norm 10) or a very "
            "small --var-x"
        )

    def _checkpoint_kept(self) -> str:
        if self.last_checkpoint_step is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint (step {self.last_checkpoint_step}) is kept in {self.run_dir}"


def train(
    train_cfg: TrainConfig,
    runs_dir: str = "runs",
    model_cfg: UGVAEConfig | None = None,
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
    trainer.start(run_dir)
    fit_with_writer(trainer, writer_factory)
    return run_dir


def resume(run_dir: str, quiet: bool = False, device: str | None = None, writer_factory=None) -> str:
    """Continue a killed run from its newest good checkpoint, in the same directory."""
    model_cfg, train_cfg, payload = load_config(run_dir)
    if "lightning" in payload:
        raise RunError(
            f"{run_dir} was trained with --strategy, whose steps span several processes; "
            "resuming it on one device is not supported, start a new run"
        )
    if device:
        train_cfg = replace(train_cfg, device=device)
    trainer = Trainer(train_cfg, model_cfg, quiet=quiet)
    trainer.restore(run_dir)
    fit_with_writer(trainer, writer_factory)
    return run_dir


def fit_with_writer(trainer: Trainer, writer_factory=None):
    writer = writer_factory(trainer.run_dir) if writer_factory else None
    try:
        trainer.fit(writer)
    finally:
        if writer:
            writer.close()  # flushes the events of a run that stops early too
