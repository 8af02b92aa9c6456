"""grouped:BASE: every group shares its hidden factors, drawn in their documented ranges."""

import pytest
import torch

from ugvae.data import load_dataset, own_groups
from ugvae.data.grouped import FACTOR_RANGES, GROUP_SIZE, apply_factors


@pytest.fixture(scope="module")
def grouped():
    return load_dataset("grouped:synthetic:200", "train")


def test_groups_share_their_factors_and_factors_lie_in_range(grouped):
    assert len(grouped) == 200 // GROUP_SIZE * GROUP_SIZE and grouped.factor_names == ["angle", "gain"]
    for g in grouped.groups.unique():
        members = grouped.factors[grouped.groups == g]
        assert len(members) == GROUP_SIZE and bool((members == members[0]).all())
    per_group = grouped.factors[::GROUP_SIZE]
    for f, (lo, hi) in enumerate(FACTOR_RANGES.values()):
        assert bool(((per_group[:, f] >= lo) & (per_group[:, f] <= hi)).all())
    assert per_group[:, 0].std() > 10  # factors vary across groups
    assert len(grouped.labels.unique()) > 1 and grouped.labels is not None  # digits vary within a group


def test_train_and_test_draw_different_factors_reproducibly(grouped):
    test = load_dataset("grouped:synthetic:200", "test")
    again = load_dataset("grouped:synthetic:200", "train")
    assert torch.equal(grouped.images, again.images) and torch.equal(grouped.factors, again.factors)
    assert test.factors[0, 0] != grouped.factors[0, 0]
    assert own_groups(grouped, 8).shape == (len(grouped) // 8, 8)


def test_factors_rotate_and_scale_contrast():
    image = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    image[0, 0, 4:24, 12:16] = 200  # a vertical bar
    identity = apply_factors(image, torch.tensor([[0.0, 1.0]]))
    assert (identity.int() - image.int()).abs().max() <= 1
    dim = apply_factors(image, torch.tensor([[0.0, 0.5]]))
    assert dim.float().sum() / image.float().sum() == pytest.approx(0.5, abs=0.01)
    turned = apply_factors(image, torch.tensor([[90.0, 1.0]]))
    assert turned[0, 0, 12:16, 4:24].float().mean() > 150 and turned[0, 0, 4:10, 12:16].float().mean() < 20
