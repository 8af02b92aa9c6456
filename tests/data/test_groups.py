"""RandomGroups and MixedGroups: shapes, coverage, reproducibility, resuming and exact domain proportions."""

import pytest
import torch

from ugvae.data import DataError, MixedGroups, RandomGroups


def test_random_groups_cover_each_index_at_most_once():
    sampler = RandomGroups(103, group_size=5, groups_per_step=2, seed=1)
    steps = list(sampler.epoch(0))
    assert sampler.steps_per_epoch == len(sampler) == 10 == len(steps)
    assert all(s.shape == (2, 5) and s.dtype == torch.long for s in steps)
    seen = torch.cat([s.flatten() for s in steps])
    assert len(seen.unique()) == 100 and seen.max() < 103


def test_random_groups_reproducible_per_seed_and_epoch():
    a, b = RandomGroups(50, 5, seed=2), RandomGroups(50, 5, seed=2)
    assert torch.equal(torch.stack(list(a.epoch(3))), torch.stack(list(b.epoch(3))))
    assert not torch.equal(torch.stack(list(a.epoch(3))), torch.stack(list(a.epoch(4))))
    assert not torch.equal(torch.stack(list(a.epoch(3))), torch.stack(list(RandomGroups(50, 5, seed=3).epoch(3))))


def test_start_step_equals_slicing():
    sampler = RandomGroups(60, 4, groups_per_step=3, seed=0)
    full = list(sampler.epoch(2))
    resumed = list(sampler.epoch(2, start_step=3))
    assert len(resumed) == len(full) - 3 and all(torch.equal(x, y) for x, y in zip(full[3:], resumed))


def test_too_small_dataset_is_refused():
    with pytest.raises(DataError, match="dataset of 10 samples is smaller than one step of 2x8"):
        RandomGroups(10, group_size=8, groups_per_step=2)


@pytest.mark.parametrize("mix, count_0", [(0.5, 5), (0.3, 3), (1.0, 10), (0.0, 0)])
def test_mixed_groups_have_exact_proportions(mix, count_0):
    domains = torch.tensor([0] * 70 + [1] * 130)
    sampler = MixedGroups(domains, group_size=10, groups_per_step=2, mix=mix, seed=0)
    steps = list(sampler.epoch(0))
    assert sampler.steps_per_epoch == 10 == len(steps)
    for step in steps:
        assert step.shape == (2, 10)
        assert (domains[step] == 0).sum(dim=1).tolist() == [count_0, count_0]
        assert all(len(group.unique()) == 10 for group in step)
    assert torch.equal(torch.stack(steps), torch.stack(list(sampler.epoch(0))))


def test_mixed_groups_reuse_the_smaller_domain_only_after_a_full_pass():
    domains = torch.tensor([0] * 20 + [1] * 80)
    drawn = torch.stack(list(MixedGroups(domains, group_size=10, mix=0.5).epoch(0))).flatten()
    from_0 = drawn[domains[drawn] == 0]
    assert len(from_0) == 50 and len(from_0[:20].unique()) == 20 and len(from_0[20:40].unique()) == 20


def test_mixed_groups_refuse_bad_domains():
    with pytest.raises(DataError):
        MixedGroups(torch.tensor([0, 1, 2, 1]), group_size=2)
    with pytest.raises(DataError, match="domain 1"):
        MixedGroups(torch.zeros(20, dtype=torch.long), group_size=4, mix=0.5)
