"""Beta diagnostics on cases with a known answer, and their place in a run's metrics."""

import csv
import math
import os

import pytest
import torch

from ugvae.data import ImageSet
from ugvae.guide import build
from ugvae.model import ModelConfig
from ugvae.train import fit
from ugvae.trained import TrainConfig
from ugvae.trained.diagnostics import (
    beta_diagnostics,
    beta_information,
    beta_spread,
    cluster_assignments,
    inactive_beta_message,
)
from ugvae.trained.metrics import METRIC_FIELDS


def test_an_ignored_beta_carries_no_information_and_pays_only_marginal_kl():
    # Every group gets the same posterior, parked away from the prior: a learned bias.
    loc, scale = torch.full((20, 3), 1.5), torch.full((20, 3), 0.2)
    info = beta_information(loc, scale)
    assert info["beta_mi"] == pytest.approx(0.0, abs=1e-9)
    assert info["beta_marginal_kl"] == pytest.approx(info["beta_kl"]) and info["beta_kl"] > 3
    assert beta_spread(loc, scale) == {"beta_active_dims": 0, "beta_spread": 0.0}


def test_well_separated_groups_carry_log_g_nats():
    G = 8
    loc = torch.zeros(G, 2)
    loc[:, 0] = 10 * torch.arange(G)  # far apart in units of the posterior scale
    info = beta_information(loc, torch.full((G, 2), 0.1), samples=64)
    assert info["beta_mi"] == pytest.approx(math.log(G), abs=1e-6)
    assert info["beta_mi"] + info["beta_marginal_kl"] == pytest.approx(info["beta_kl"])
    assert beta_spread(loc, torch.full((G, 2), 0.1))["beta_active_dims"] == 1


def test_a_decoder_blind_to_beta_changes_no_pixel_with_it():
    cfg = ModelConfig(x_shape=(1, 4, 4), z_dim=2, beta_dim=3, K=3, hidden=8)
    model, guide = build(cfg)
    with torch.no_grad():
        model.decoder.net[0].weight[:, cfg.z_dim :] = 0  # the decoder reads [z, beta]: cut beta
    images = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8)
    out = beta_diagnostics(model, guide, images, torch.arange(40).view(8, 5))
    assert out["pixel_change_beta"] == 0.0 and out["pixel_change_z"] > 0
    assert set(out) <= set(METRIC_FIELDS)
    assert model.training and guide.training  # left as found
    assert beta_diagnostics(*build(cfg, "vae"), images, torch.arange(40).view(8, 5)) == {}


def test_cluster_assignments_are_argmax_of_q_d_at_the_mean_z():
    cfg = ModelConfig(x_shape=(1, 4, 4), z_dim=2, beta_dim=3, K=3, hidden=8)
    _, guide = build(cfg)
    images = torch.randint(0, 256, (30, 1, 4, 4), dtype=torch.uint8)
    pi = guide.local_posterior(images.float().div(255).unsqueeze(0))[2][0]
    assert torch.equal(cluster_assignments(guide, images, chunk=7), pi.argmax(-1))


def test_every_epoch_row_holds_the_diagnostics(tmp_path, one_thread, caplog):
    cfg = TrainConfig(dataset="synthetic:120", epochs=1, group_size=8)
    model_cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16)
    run_dir = fit(cfg, model_cfg, runs_dir=str(tmp_path)).run_dir
    rows = list(csv.DictReader(open(os.path.join(run_dir, "metrics.csv"))))
    epoch_row = [r for r in rows if r["test_elbo"]][-1]
    for key in ("beta_kl", "beta_mi", "beta_marginal_kl", "beta_active_dims", "beta_spread", "pixel_change_beta"):
        assert epoch_row[key] != ""
    assert float(epoch_row["beta_mi"]) <= math.log(24 // 8) + 1e-6  # I(X; beta) <= log G on G test groups
    assert ("beta is inactive" in caplog.text) == (int(epoch_row["beta_active_dims"]) == 0)


def test_images_set_needs_one_value_per_image():
    with pytest.raises(Exception, match="groups"):
        ImageSet(images=torch.zeros(3, 1, 2, 2, dtype=torch.uint8), name="x", groups=torch.zeros(2))


INACTIVE = {"beta_active_dims": 0, "beta_kl": 0.4, "beta_mi": 0.0, "beta_mi_bound": math.log(6)}


def test_one_test_group_cannot_judge_beta():
    """Issue 30 (1b): 24 test images at B=16 made one test group, and beta was called inactive on it."""
    message = inactive_beta_message({**INACTIVE, "beta_mi_bound": 0.0}, TrainConfig(groups="labels:0"))
    assert message.startswith("beta cannot be judged: its diagnostics saw 1 test group")
    assert "`groups`" not in message and "inactive" not in message


@pytest.mark.parametrize(
    "train_cfg, fix",
    [
        (TrainConfig(), "train on groups that share something, e.g. `groups` labels:0.3"),
        (TrainConfig(groups="labels:0"), "its training groups (labels:0) share something, but z holds it"),
        (TrainConfig(groups="clusters:0.3"), "its training groups (clusters:0.3) share something"),
        (TrainConfig(dataset="grouped:mnist"), "its training groups (the groups of grouped:mnist) share something"),
    ],
    ids=["random", "labels", "clusters", "grouped data"],
)
def test_an_inactive_beta_is_never_told_to_train_on_the_grouping_it_had(train_cfg, fix):
    """Issue 30 (1b): a run trained with `--groups labels:0` was told to train on `--groups labels:0.3`."""
    message = inactive_beta_message(INACTIVE, train_cfg)
    assert message.startswith("beta is inactive: no dim of E[beta|X] has variance > 0.01 across 6 test groups")
    assert fix in message
    if train_cfg.groups != "random" or train_cfg.dataset.startswith("grouped:"):
        assert "labels:0.3" not in message and "`z_dim`" in message
    assert inactive_beta_message({**INACTIVE, "beta_active_dims": 2}, train_cfg) is None
    assert inactive_beta_message({}, train_cfg) is None  # a model without beta


def test_data_given_in_groups_of_its_own_is_never_told_to_train_on_groups():
    """Tensors given with `groups` train on those groups: the fix is z_dim, as for grouped:BASE."""
    message = inactive_beta_message(INACTIVE, TrainConfig(dataset="tensors:0123456789ab"), own_groups=True)
    assert "the groups of tensors:0123456789ab" in message and "labels:0.3" not in message and "`z_dim`" in message
