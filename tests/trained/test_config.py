"""The memory check counts a guide's parameters (trained/config.py `parameter_count`): on the meta
device, which allocates nothing, or, for a guide that reads values in `__init__`, once on the CPU
without touching the run's random stream."""

import pytest
import torch

from ugvae.guide import GUIDES, UGVAEGuide, register
from ugvae.model import MODELS, ModelConfig
from ugvae.trained.config import TrainConfig, parameter_count, training_bytes

CFG = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=8)


class ReadsData(UGVAEGuide):
    def __init__(self, cfg):
        super().__init__(cfg)
        sample = torch.rand(32, *cfg.x_shape)  # a statistic of data, read as a number
        self.offset = torch.nn.Parameter(torch.full((cfg.z_dim,), sample.mean().item()))


def cpu_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("pair", sorted(GUIDES), ids="-".join)
def test_shipped_networks_are_counted_on_the_meta_device_as_built(pair):
    model_name, guide_name = pair
    assert parameter_count(GUIDES[pair], CFG) == cpu_count(GUIDES[pair](CFG))
    assert parameter_count(MODELS[model_name], CFG) == cpu_count(MODELS[model_name](CFG))


def test_a_guide_that_reads_values_in_init_is_counted_once_on_the_cpu(guides_restored):
    register(ReadsData, name="reads-data")
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    count = parameter_count(ReadsData, CFG)
    assert torch.equal(torch.rand(2), expected)  # the run's random stream is untouched
    assert count == cpu_count(ReadsData(CFG)) == cpu_count(UGVAEGuide(CFG)) + CFG.z_dim
    _, parameters = training_bytes(CFG, TrainConfig(guide="reads-data"))
    assert parameters == cpu_count(MODELS["ugvae"](CFG)) + count


def test_a_shipped_network_that_fails_on_meta_is_a_bug_not_a_fallback(monkeypatch):
    def fails(self, cfg):
        raise RuntimeError("a bug")

    monkeypatch.setattr(UGVAEGuide, "__init__", fails)
    with pytest.raises(RuntimeError, match="a bug"):
        parameter_count(UGVAEGuide, CFG)
