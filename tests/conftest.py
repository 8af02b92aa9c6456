import os
import sys

import pyro
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(autouse=True)
def fresh_pyro():
    """Every test starts with an empty param store, validation on and a fixed seed."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def tiny_cfg():
    from model import ModelConfig

    return ModelConfig(x_shape=(1, 4, 4), z_dim=2, beta_dim=3, K=3, hidden=8)
