"""Two-domain training data end to end: image folders -> A+B mixture -> mixed groups -> a conv SVI step."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import write_domain
from ugvae.data import DataError, MixedGroups, load_dataset
from ugvae.guide import build
from ugvae.model import ModelConfig
from ugvae.train import elbo_module, new_trainer
from ugvae.trained import TrainConfig


@pytest.fixture
def dark_and_bright(tmp_path):
    """An unequal pair, as MNIST (4,000) + Fashion-MNIST (60,000) is."""
    return write_domain(tmp_path / "dark", 20, 30), write_domain(tmp_path / "bright", 60, 220, size=(16, 10), seed=1)


def test_folder_mixture_keeps_sizes_domains_and_order(dark_and_bright):
    dark, bright = dark_and_bright
    mixed = load_dataset(f"folder:{dark}+folder:{bright}", image_size=8)
    assert mixed.x_shape == (1, 8, 8) and mixed.domain_names == [f"folder:{dark}", f"folder:{bright}"]
    assert torch.bincount(mixed.domains).tolist() == [18, 54]  # each folder's own 90% split
    background = mixed.images.float().flatten(1).median(1).values
    assert torch.equal(background > 128, mixed.domains == 1)
    test = load_dataset(f"folder:{dark}+folder:{bright}", split="test", image_size=8)
    assert torch.bincount(test.domains).tolist() == [2, 6]


@pytest.mark.parametrize(
    "second, message",
    [
        ("folder:{root}/missing", "does not exist"),
        ("folder:{root}/empty", "holds no images"),
        ("folder:{root}/broken", "broken/003.png cannot be read"),
    ],
)
def test_a_bad_second_domain_is_named(tmp_path, second, message):
    write_domain(tmp_path / "good", 10, 30)
    (tmp_path / "empty").mkdir()
    write_domain(tmp_path / "broken", 3, 200)
    (tmp_path / "broken" / "003.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=message) as err:
        load_dataset(f"folder:{tmp_path}/good+" + second.format(root=tmp_path), image_size=8)
    assert "\n" not in str(err.value)


def test_mixing_unresized_sources_of_two_sizes_names_the_fix(tmp_path):
    small = write_domain(tmp_path / "small", 10, 30)
    with pytest.raises(DataError, match=r"\(1x28x28\) .* \(1x64x64\): set `image_size` to 64"):
        load_dataset(f"synthetic:20+folder:{small}")  # the folder loader defaults to 64x64


def test_three_domains_are_refused_by_the_group_sampler(tmp_path):
    folders = [write_domain(tmp_path / str(k), 10, 40 * k, seed=k) for k in range(3)]
    mixed = load_dataset("+".join(f"folder:{f}" for f in folders), image_size=8)
    assert mixed.domains.max() == 2
    with pytest.raises(DataError, match="domain labels 0 and 1"):
        MixedGroups(mixed.domains, group_size=4)


def test_mixer_draws_domains_in_random_positions_and_uniformly_within_each():
    """Counts per group are exact; which position and which image within a domain is random."""
    n_0, n_1, B, mix = 30, 270, 10, 0.3
    domains = torch.tensor([0] * n_0 + [1] * n_1)
    sampler = MixedGroups(domains, group_size=B, groups_per_step=4, mix=mix, seed=3)
    groups = torch.cat([torch.stack(list(sampler.epoch(e))) for e in range(50)]).view(-1, B)
    assert len(groups) == 50 * 4 * (300 // 40)
    is_0 = (domains[groups] == 0).float()
    assert torch.all(is_0.sum(1) == 3)
    # Each position holds domain 0 with probability 0.3, up to binomial sampling error.
    sigma = (mix * (1 - mix) / len(groups)) ** 0.5
    assert torch.all((is_0.mean(0) - mix).abs() < 4 * sigma)
    # The 30 images of the small domain are drawn equally often, up to Poisson-like error.
    counts = torch.bincount(groups[is_0.bool()], minlength=n_0).float()
    expected = 3 * len(groups) / n_0
    assert len(counts) == n_0 and (counts - expected).abs().max() < 4 * expected**0.5
    # The large domain is shared out without repeats within an epoch: each image at most once.
    first_epoch = groups[: sampler.steps_per_epoch * 4]
    assert torch.bincount(first_epoch[domains[first_epoch] == 1]).max() == 1


def test_trainer_groups_follow_mix_without_reading_domain_labels(dark_and_bright):
    dark, bright = dark_and_bright
    cfg = TrainConfig(
        dataset=f"folder:{dark}+folder:{bright}", image_size=8, group_size=6, groups_per_step=2, mix=1 / 3, epochs=1
    )
    session = new_trainer(cfg, ModelConfig(x_shape=(1, 8, 8), z_dim=2, beta_dim=2, K=3, hidden=8)).session
    assert isinstance(session.sampler, MixedGroups)
    steps = list(session.sampler.epoch(0))
    assert len(steps) == 72 // 12  # steps per epoch count both domains: the small one is reused
    for idx in steps:
        dark_counts = (session.train_images[idx].float().flatten(2).median(-1).values < 128).sum(-1)
        assert dark_counts.tolist() == [2, 2]


@pytest.mark.slow
def test_conv_ugvae_takes_an_svi_step_on_a_64x64_rgb_mixture(tmp_path):
    a = write_domain(tmp_path / "a", 6, 30, size=(80, 60), mode="RGB")
    b = write_domain(tmp_path / "b", 6, 220, size=(50, 50), seed=1)  # grayscale, made RGB by the mixer
    data = load_dataset(f"folder:{a}+folder:{b}", split="train")  # folders default to 64x64
    cfg = ModelConfig(x_shape=data.x_shape, z_dim=2, beta_dim=2, K=3, hidden=16)
    assert data.x_shape == (3, 64, 64) and cfg.resolved_arch == "conv"
    model, guide = build(cfg)
    loss_fn = elbo_module(model, guide, jit=False)
    before = {k: v.detach().clone() for k, v in loss_fn.named_parameters()}
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=1e-2)
    x = data.float()[MixedGroups(data.domains, group_size=4, groups_per_step=2).epoch(0).__next__()]
    loss = loss_fn(x)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    unchanged = [k for k, v in loss_fn.named_parameters() if torch.equal(v, before[k])]
    assert not unchanged
    assert guide.global_posterior(x)[0].shape == (2, 2)
    with pytest.raises(ValueError, match="set `image_size` to 64"):
        ModelConfig(x_shape=(1, 28, 28), arch="conv")


def test_16_bit_grayscale_keeps_its_shades(tmp_path):
    ramp = np.repeat(np.linspace(0, 65535, 8).astype(np.uint16)[None], 8, axis=0)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")  # reopens as mode I;16
    images = load_dataset(f"folder:{tmp_path}", image_size=8).images[0, 0].float()
    assert torch.allclose(images[0], torch.linspace(0, 255, 8), atol=2)
