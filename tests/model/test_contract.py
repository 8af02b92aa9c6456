"""Every registered model keeps the contract of model/base.py that experiments and inference rely on:
the shapes it declares, and agreement with the Pyro program's own sites."""

import dataclasses

import pytest
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ugvae.model import MODELS, Components

# Every model, and UG-VAE with each extension that changes what the contract returns.
VARIANTS = [(name, {}) for name in sorted(MODELS)] + [
    ("ugvae", {"cluster_weights": "global"}),
    ("ugvae", {"decoder_film": True}),
]
IDS = [name + "".join(f"-{k}" for k in extra) for name, extra in VARIANTS]
G, B = 3, 4


def build(tiny_cfg, name, extra):
    return MODELS[name](dataclasses.replace(tiny_cfg, **extra)).eval()


def prior_trace(model):
    return poutine.trace(model).get_trace(None, num_groups=G, group_size=B)


def beta_of(trace):
    """The traced beta (G, 1, beta_dim), or None: what a caller hands back to the contract."""
    return trace.nodes["beta"]["value"] if "beta" in trace.nodes else None


@pytest.mark.parametrize("name,extra", VARIANTS, ids=IDS)
def test_latent_sizes_name_the_programs_latent_sites(name, extra, tiny_cfg):
    model = build(tiny_cfg, name, extra)
    trace = prior_trace(model)
    sampled = [name for name, site in trace.nodes.items() if site["type"] == "sample" and not site_is_subsample(site)]
    latents = [site for site in sampled if site != "x"]
    assert list(model.latent_sizes) == latents  # top down, in the order the program samples them
    for site, size in model.latent_sizes.items():
        fn = trace.nodes[site]["fn"]
        if site == "d":
            assert fn.probs.shape[-1] == size == model.num_components == tiny_cfg.K
        else:
            assert fn.event_shape == (size,)
    assert (model.has_global_latent, model.has_mixture) == ("beta" in latents, "d" in latents)
    if not model.has_mixture:
        assert model.num_components == 1


@pytest.mark.parametrize("name,extra", VARIANTS, ids=IDS)
def test_decode_is_the_mean_of_the_programs_x(name, extra, tiny_cfg):
    model = build(tiny_cfg, name, extra)
    trace = prior_trace(model)
    z, beta = trace.nodes["z"]["value"], beta_of(trace)
    images = model.decode(z, beta)
    assert images.shape == (G, B, *tiny_cfg.x_shape)
    torch.testing.assert_close(images, trace.nodes["x"]["fn"].mean)
    # Any batch dims broadcast: one z against a row of betas, as the interpolation grids ask.
    if beta is not None:
        grid = model.decode(z[0, :1], beta[:, 0])  # (1, z_dim) with (G, beta_dim)
        torch.testing.assert_close(grid, model.decode(z[0, :1].expand(G, -1), beta[:, 0]))


@pytest.mark.parametrize("name,extra", VARIANTS, ids=IDS)
def test_the_program_samples_z_from_the_declared_components(name, extra, tiny_cfg):
    model = build(tiny_cfg, name, extra)
    trace = prior_trace(model)
    beta = beta_of(trace)
    components = model.prior_components(beta)
    assert isinstance(components, Components)
    batch = (G, 1) if beta is not None else ()
    assert components.loc.shape == components.scale.shape == (*batch, model.num_components, tiny_cfg.z_dim)
    assert (components.scale > 0).all()
    d = trace.nodes["d"]["value"] if "d" in trace.nodes else torch.zeros(G, B, dtype=torch.long)
    fn = trace.nodes["z"]["fn"]
    loc, scale = (t.expand(G, B, -1, -1) if t.dim() < 4 else t.expand(-1, B, -1, -1) for t in components)
    picked = d[..., None, None].expand(G, B, 1, tiny_cfg.z_dim)
    torch.testing.assert_close(fn.mean.expand(G, B, -1), loc.gather(-2, picked)[..., 0, :])
    torch.testing.assert_close(fn.stddev.expand(G, B, -1), scale.gather(-2, picked)[..., 0, :])


@pytest.mark.parametrize("name,extra", VARIANTS, ids=IDS)
def test_the_program_samples_d_from_the_declared_logits(name, extra, tiny_cfg):
    model = build(tiny_cfg, name, extra)
    trace = prior_trace(model)
    beta = beta_of(trace)
    logits = model.cluster_logits(beta)
    batch = (G, 1) if beta is not None else ()
    assert logits.shape == (*batch, model.num_components)
    if "d" in trace.nodes:
        declared = torch.log_softmax(logits, -1).expand(G, B, -1)
        torch.testing.assert_close(trace.nodes["d"]["fn"].logits.expand(G, B, -1), declared)
    # With global weights p(d | beta) moves with beta; otherwise it is eq. 4's uniform one.
    uniform = torch.full_like(logits, -torch.log(torch.tensor(float(model.num_components))))
    moves = extra.get("cluster_weights") == "global"
    assert torch.allclose(torch.log_softmax(logits, -1), uniform) != moves


@pytest.mark.parametrize("name,extra", VARIANTS, ids=IDS)
def test_beta_is_asked_for_exactly_when_the_model_has_one(name, extra, tiny_cfg):
    model = build(tiny_cfg, name, extra)
    z = torch.zeros(2, tiny_cfg.z_dim)
    beta = torch.zeros(2, tiny_cfg.beta_dim)
    missing, extra_beta = (None, None) if model.has_global_latent else (None, beta)
    for method, args in (("decode", (z,)), ("prior_components", ()), ("cluster_logits", ())):
        if model.has_global_latent:
            with pytest.raises(ValueError, match=f"has a global latent: {method} needs beta"):
                getattr(model, method)(*args, missing)
        else:
            with pytest.raises(ValueError, match=f"has no global latent: {method} takes no beta"):
                getattr(model, method)(*args, extra_beta)
