"""A small trained run that the crafted-file tests copy and plant their files in."""

import shutil

import pytest
import torch


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A finished run with good checkpoints at steps 2, 4 and 5 (its epoch end)."""
    from ugvae.model import ModelConfig
    from ugvae.train import TrainConfig, fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = TrainConfig(dataset="synthetic:40", epochs=1, group_size=8, checkpoint_every=2, keep_checkpoints=5)
    model_cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=8)
    run_dir = fit(cfg, model_cfg, runs_dir=str(tmp_path_factory.mktemp("runs"))).run_dir
    torch.set_num_threads(threads)
    return run_dir


@pytest.fixture
def run_copy(small_run, tmp_path):
    """A copy of `small_run` of this test's own."""
    return shutil.copytree(small_run, str(tmp_path / "run"))
