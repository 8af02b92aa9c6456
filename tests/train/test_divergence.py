"""A diverging run stops at the step that diverged and keeps its last good checkpoint; --clip-norm clips."""

import re

import pyro
import pytest
import torch
from pyro.infer.util import is_validation_enabled

from ugvae import run
from ugvae.errors import TrainingDiverged
from ugvae.model import ModelConfig
from ugvae.train import new_trainer
from ugvae.trained import TrainConfig, load_run

TINY_MODEL = ["--hidden", "16", "--z-dim", "2", "--beta-dim", "2", "--K", "3"]


def test_huge_learning_rate_stops_with_the_step_and_keeps_a_good_checkpoint(tmp_path, capsys, one_thread):
    run_dir = str(tmp_path / "run")
    argv = [
        "--dataset",
        "synthetic:200",
        *TINY_MODEL,
        "-B",
        "8",
        "--epochs",
        "3",
        "--lr",
        "100",
        "--checkpoint-every",
        "1",
        "--log-every",
        "1",
        "--quiet",
        "--run-dir",
        run_dir,
    ]
    assert run.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: training diverged at step ")
    diverged_at, kept = map(int, re.search(r"at step (\d+):.*last good checkpoint \(step (\d+)\)", err).groups())
    assert kept < diverged_at and "--lr 10)" in err and "--clip-norm" in err
    config = load_run(run_dir)
    model, guide = config.model, config.guide
    assert config.step == kept
    assert all(torch.isfinite(p).all() for p in [*model.parameters(), *guide.parameters()])


@pytest.mark.filterwarnings("ignore:Encountered NaN")
@pytest.mark.parametrize("log_every", [1, 4])
def test_a_nan_loss_is_caught_without_validation_and_never_checkpointed(tmp_path, one_thread, log_every):
    # With Pyro's validation off (the default on CUDA) nothing rejects NaN scales: the loss itself
    # turns NaN/inf, and the check before each checkpoint must catch it even between two logs.
    cfg = TrainConfig(
        dataset="synthetic:200",
        epochs=3,
        group_size=8,
        lr=100.0,
        log_every=log_every,
        checkpoint_every=1,
        validate=False,
    )
    trainer = new_trainer(cfg, ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16))
    trainer.start(run_dir=str(tmp_path / "run"))
    with pytest.raises(TrainingDiverged, match=r"at step (\d+): the (ELBO became (nan|-?inf)|weights became)") as e:
        trainer.fit()
    diverged_at = int(str(e.value).split("at step ")[1].split(":")[0])
    kept = trainer.session.run.latest_checkpoint()
    assert kept.step == diverged_at - 1 and kept.run_id == trainer.session.run.run_id
    assert all(torch.isfinite(v).all() for v in [*kept.model.values(), *kept.guide.values()])


def test_validation_on_names_the_invalid_parameter_even_where_pyro_validation_is_off(tmp_path, one_thread):
    """--validate turns the checks on for the steps (not for the process), and divergence is then reported
    as the distribution parameter that became invalid, before any NaN reaches the loss."""
    pyro.enable_validation(False)
    cfg = TrainConfig(dataset="synthetic:200", epochs=3, group_size=8, lr=100.0, checkpoint_every=1, validate=True)
    trainer = new_trainer(cfg, ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16))
    trainer.start(run_dir=str(tmp_path / "run"))
    with pytest.raises(TrainingDiverged, match=r"at step \d+: the \w+ of a \w+ distribution became invalid"):
        trainer.fit()
    assert not is_validation_enabled()  # the process keeps its own setting


def test_clip_norm_bounds_the_gradient(tmp_path, one_thread):
    model_cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16)
    norms = {}
    for clip in (None, 0.5):
        trainer = new_trainer(TrainConfig(dataset="synthetic:40", epochs=1, group_size=8, clip_norm=clip), model_cfg)
        trainer.train_step(next(iter(trainer.session.sampler.epoch(0))))
        grads = [p.grad for p in trainer.loss_fn.parameters() if p.grad is not None]
        norms[clip] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    assert norms[None] > 0.5 and norms[0.5] == pytest.approx(0.5, rel=1e-4)
