"""The Lightning path: two CPU processes (gloo) against one process replaying the same groups."""

import math
import os
import shutil

import pytest
import torch

pytest.importorskip("lightning")

from lightning.pytorch import Callback  # noqa: E402

from tests.helpers import logged
from ugvae.data import RandomGroups, load_dataset  # noqa: E402
from ugvae.guide import build  # noqa: E402
from ugvae.model import ModelConfig  # noqa: E402
from ugvae.train import fit, resume  # noqa: E402
from ugvae.train.elbo import elbo_module  # noqa: E402
from ugvae.trained import load_run  # noqa: E402
from ugvae.trained.checkpoint import checkpoint_step, list_checkpoints  # noqa: E402
from ugvae.trained.config import LaunchConfig, TrainConfig  # noqa: E402
from ugvae.trained.metrics import read_metrics  # noqa: E402

pytestmark = pytest.mark.slow  # every test here trains or spawns processes

G, B, STEPS = 2, 4, 3


class StepRecorder(Callback):
    """Saves, per rank, the initial weights and each step's RNG state, groups, loss and weights."""

    def __init__(self, folder):
        self.folder = folder

    def on_train_start(self, trainer, module):
        self.record = {"initial": {k: v.clone() for k, v in module.loss_fn.state_dict().items()}, "steps": []}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.rng = torch.get_rng_state()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.record["steps"].append(
            {
                "rng": self.rng,
                "batch": batch.clone(),
                "loss": outputs["loss"].item(),
                "params": {n: p.detach().clone() for n, p in module.loss_fn.named_parameters()},
            }
        )

    def on_train_end(self, trainer, module):
        torch.save(self.record, os.path.join(self.folder, f"rank{trainer.global_rank}.pt"))


def replay(records, model_cfg, lr):
    """One process over both ranks' groups and noise, with loss / 2 as DDP averages two gradients."""
    model, guide = build(model_cfg)
    loss_fn = elbo_module(model, guide, jit=False)
    loss_fn.load_state_dict(records[0]["initial"])
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=lr)
    for step in range(STEPS):
        optimizer.zero_grad()
        total = 0.0
        for record in records:
            torch.set_rng_state(record["steps"][step]["rng"])
            loss = loss_fn(record["steps"][step]["batch"].float() / 255)
            (loss / len(records)).backward()
            total += loss.item()
        optimizer.step()
        yield total, {n: p.detach().clone() for n, p in loss_fn.named_parameters()}


def test_two_processes_match_one_process_on_the_same_groups(tmp_path):
    train_cfg = TrainConfig(
        dataset="synthetic:48", image_size=8, epochs=1, group_size=B, groups_per_step=G, lr=1e-2, log_every=1, seed=3
    )
    model_cfg = ModelConfig(x_shape=(1, 8, 8), z_dim=2, beta_dim=2, K=3, hidden=16)
    launch = LaunchConfig(strategy="ddp_spawn", devices=2, accelerator="cpu")
    recorder = StepRecorder(str(tmp_path))
    run_dir = fit(train_cfg, model_cfg, runs_dir=str(tmp_path / "runs"), launch=launch, lightning_callbacks=[recorder])
    run_dir = run_dir.run_dir

    records = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [len(r["steps"]) for r in records] == [STEPS, STEPS]  # 48 // (2 ranks * G * B)
    # Each step's 2G groups are one step of the single-process sampler, split between the ranks.
    images = load_dataset("synthetic:48", "train", image_size=8).images
    for step, idx in enumerate(RandomGroups(48, B, 2 * G, seed=3).epoch(0)):
        both = torch.cat([r["steps"][step]["batch"] for r in records])
        assert torch.equal(both, images[idx])
    rows = [row for row in read_metrics(os.path.join(run_dir, "metrics.csv")) if row["step"] <= STEPS]
    for step, (total, params) in enumerate(replay(records, model_cfg, train_cfg.lr)):
        rank0, rank1 = (r["steps"][step] for r in records)
        assert all(torch.equal(rank0["params"][n], rank1["params"][n]) for n in params)
        assert rank0["loss"] + rank1["loss"] == pytest.approx(total, rel=1e-5)
        assert rows[step]["train_elbo"] == pytest.approx(-total / (2 * G * B), rel=1e-5)
        torch.testing.assert_close(rank0["params"], params, rtol=1e-4, atol=1e-5)

    # Rank 0 alone wrote one run directory, whose checkpoint holds the final weights.
    assert os.listdir(tmp_path / "runs") == [os.path.basename(run_dir)]
    config = load_run(run_dir)
    model, guide = config.model, config.guide
    assert config.step == STEPS
    final = records[0]["steps"][-1]["params"]
    for name, value in [*model.named_parameters(prefix="model"), *guide.named_parameters(prefix="guide")]:
        torch.testing.assert_close(value, final[name])


def killed_copy(run_dir, dest, step):
    """The run as a kill right after its checkpoint of `step` would leave it."""
    shutil.copytree(run_dir, dest)
    for path in list_checkpoints(dest):
        if checkpoint_step(path) > step:
            os.remove(path)
    return str(dest)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_a_resumed_lightning_run_continues_the_run(tmp_path, processes):
    train_cfg = TrainConfig(
        dataset="synthetic:96", image_size=8, epochs=2, group_size=B, groups_per_step=G, log_every=1,
        checkpoint_every=5, keep_checkpoints=20, seed=5,
    )  # fmt: skip
    model_cfg = ModelConfig(x_shape=(1, 8, 8), z_dim=2, beta_dim=2, K=3, hidden=16)
    if processes == 1:
        launch = LaunchConfig(strategy="auto", devices=1, accelerator="cpu")
    else:
        launch = LaunchConfig(strategy="ddp_spawn", devices=2, accelerator="cpu")
    full = fit(train_cfg, model_cfg, runs_dir=str(tmp_path / "runs"), launch=launch).run_dir
    steps_per_epoch = 96 // (G * B * processes)
    assert read_metrics(f"{full}/metrics.csv")[-1]["step"] == 2 * steps_per_epoch
    # Killed mid-epoch 1 (after a checkpoint of --checkpoint-every), then resumed with its own launch options.
    step = 5 * (steps_per_epoch // 5 + 1)
    assert steps_per_epoch < step < 2 * steps_per_epoch
    resumed = killed_copy(full, tmp_path / "resumed", step)
    assert resume(resumed).run_dir == resumed
    before, after = logged(full), logged(resumed)
    assert [r["step"] for r in after] == [r["step"] for r in before]
    if processes == 1:
        # One process restores every generator: the resumed run repeats the uninterrupted one exactly.
        assert after == before
        final = load_run(full).model.state_dict()
        for name, value in load_run(resumed).model.state_dict().items():
            assert torch.equal(value, final[name]), name
    else:
        # Rank 1's generator is not in the checkpoint: identical up to the kill, finite after it.
        assert [r for r in after if int(r["step"]) <= step] == [r for r in before if int(r["step"]) <= step]
        assert all(math.isfinite(float(r["train_elbo"])) for r in after)
    assert load_run(resumed).step == 2 * steps_per_epoch
