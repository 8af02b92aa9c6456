import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from ugvae.guide import UGVAEGuide
from ugvae.model import ModelConfig, UGVAEModel


def test_site_shapes_and_plates(tiny_cfg):
    model, guide = UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg)
    G, B = 3, 5
    x = torch.rand(G, B, *tiny_cfg.x_shape)
    guide_trace = poutine.trace(poutine.enum(guide, first_available_dim=-3)).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    nodes = model_trace.nodes
    assert nodes["beta"]["value"].shape == (G, 1, tiny_cfg.beta_dim)
    assert [f.name for f in nodes["beta"]["cond_indep_stack"]] == ["groups"]
    for site in ("d", "z", "x"):
        assert {f.name for f in nodes[site]["cond_indep_stack"]} == {"groups", "samples"}
    assert nodes["d"]["value"].shape == (tiny_cfg.K, 1, 1)  # enumerated at dim -3
    assert nodes["z"]["log_prob"].shape == (tiny_cfg.K, G, B)
    assert nodes["x"]["log_prob"].shape == (G, B)


def test_every_parameter_gets_a_gradient(tiny_cfg):
    model, guide = UGVAEModel(tiny_cfg), UGVAEGuide(tiny_cfg)
    loss = TraceEnum_ELBO(max_plate_nesting=2).differentiable_loss(model, guide, torch.rand(2, 4, *tiny_cfg.x_shape))
    loss.backward()
    for name, p in list(model.named_parameters()) + list(guide.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_generates_groups_without_data(tiny_cfg):
    model = UGVAEModel(tiny_cfg)
    trace = poutine.trace(model).get_trace(None, num_groups=2, group_size=6)
    assert trace.nodes["x"]["value"].shape == (2, 6, *tiny_cfg.x_shape)
    # all samples of a group share one beta, groups do not
    beta = trace.nodes["beta"]["value"]
    assert beta.shape == (2, 1, tiny_cfg.beta_dim) and not torch.allclose(beta[0], beta[1])


def test_bad_input_shape_is_named(tiny_cfg):
    with pytest.raises(ValueError, match="G, B, C, H, W"):
        UGVAEModel(tiny_cfg)(torch.rand(5, *tiny_cfg.x_shape))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(K=0), "K"),
        (dict(z_dim=-1), "z_dim"),
        (dict(likelihood="poisson"), "likelihood"),
        (dict(x_shape=(3, 32, 32), arch="conv"), "64x64"),
    ],
)
def test_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**kwargs)


def test_config_round_trips():
    cfg = ModelConfig(x_shape=(3, 64, 64), K=20, z_dim=20, beta_dim=50)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.resolved_arch == "conv" and ModelConfig().resolved_arch == "mlp"
