"""Fixtures shared by every test package (helpers that are no fixtures: tests/helpers.py)."""

import shutil
import subprocess

import pyro
import pytest
import torch

# The tests' networks are tiny: one thread is faster than two, and never oversubscribes a busy CI box.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def fresh_pyro():
    """Every test starts with an empty param store, validation on and a fixed seed."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def one_thread():
    """One torch thread for the test (a test may change it): a subprocess limited to one sums in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_cfg():
    from ugvae.model import ModelConfig

    return ModelConfig(x_shape=(1, 4, 4), z_dim=2, beta_dim=3, K=3, hidden=8)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A finished run with good checkpoints at steps 2, 4 and 5 (its epoch end), for tests that
    read it, or copy it (`run_copy`) and damage or plant files in the copy."""
    from ugvae.model import ModelConfig
    from ugvae.train import fit
    from ugvae.trained import TrainConfig

    cfg = TrainConfig(dataset="synthetic:40", epochs=1, group_size=8, checkpoint_every=2, keep_checkpoints=5)
    model_cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=8)
    return fit(cfg, model_cfg, runs_dir=str(tmp_path_factory.mktemp("runs"))).run_dir


@pytest.fixture
def run_copy(small_run, tmp_path):
    """A copy of `small_run` of this test's own."""
    return shutil.copytree(small_run, str(tmp_path / "run"))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs of its own, so that a write can really run out of space."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        reason = result.stderr.decode().strip()
        pytest.skip(f"cannot mount a tmpfs here ({reason}); the simulated ENOSPC tests still run")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def guides_restored():
    """The guide registry as it was before the test: what a test registers or loads stays in it."""
    from ugvae.guide import registry

    guides, sources = dict(registry.GUIDES), dict(registry._sources)
    yield registry
    registry.GUIDES.clear(), registry.GUIDES.update(guides)
    registry._sources.clear(), registry._sources.update(sources)
