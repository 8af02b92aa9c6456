"""data/sampling.py: the one draw and rounding rule (shared with the groups experiments draw), the
law of each training sampler on small data, exact reproducibility and resuming, the fixed test groups."""

import numpy as np
import pytest
import torch

from ugvae.data import (
    DataError,
    ImageSet,
    MixedGroups,
    RandomGroups,
    mixed_class_groups,
    seeded_partition,
    structured_groups,
    training_groups,
)
from ugvae.data.sampling import ClusterGroups, OwnGroups, draw, parse_mix, parse_spec, rounded_counts

N, C = 2000, 5


def labelled(n=N, classes=C, domains=None):
    labels = torch.arange(n) % classes
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    return ImageSet(
        images=images, name="toy", labels=labels, class_names=[str(c) for c in range(classes)], domains=domains
    )


def all_groups(sampler, epoch=0):
    return torch.cat([idx for idx in sampler.epoch(epoch)])


def test_labels_alpha_zero_puts_one_class_in_every_group():
    data = labelled()
    groups = all_groups(training_groups("labels:0", data, 8, 5, seed=1), 0)
    assert groups.shape == (N // 40 * 5, 8)
    assert bool((data.labels[groups] == data.labels[groups][:, :1]).all())
    used = torch.bincount(data.labels[groups[:, 0]], minlength=C)
    assert bool((used > 0).all())  # every class gets groups


def test_labels_dirichlet_shares_have_the_dirichlet_law():
    data, B, alpha = labelled(), 40, 0.5
    groups = torch.cat([all_groups(training_groups(f"labels:{alpha}", data, B, 1, seed=0), e) for e in range(4)])
    shares = torch.nn.functional.one_hot(data.labels[groups], C).float().mean(1)  # (groups, C)
    assert shares.mean(0).numpy() == pytest.approx(np.full(C, 1 / C), abs=0.04)
    # Var of one Dirichlet(alpha) share: (1/C)(1 - 1/C) / (C alpha + 1); rounding to 1/B adds little.
    expected = (1 / C) * (1 - 1 / C) / (C * alpha + 1)
    assert shares.var(0).mean().item() == pytest.approx(expected, rel=0.25)
    plain = torch.nn.functional.one_hot(data.labels[all_groups(training_groups("random", data, B, 1, 0))], C)
    assert plain.float().mean(1).var(0).mean().item() < expected / 3  # random groups are far more even


def test_beta_shares_of_a_mixture_follow_beta_a_a():
    domains = (torch.arange(N) >= N // 2).long()
    data, B, a = labelled(domains=domains), 50, 0.5
    sampler = training_groups("random", data, B, 2, seed=0, mix=f"beta:{a}")
    groups = torch.cat([all_groups(sampler, e) for e in range(5)])
    share = (domains[groups] == 0).float().mean(1)
    assert share.mean().item() == pytest.approx(0.5, abs=0.05)
    assert share.var().item() == pytest.approx(1 / (4 * (2 * a + 1)), rel=0.25)
    fixed = training_groups("random", data, B, 2, seed=0, mix=0.3)
    assert bool(((domains[all_groups(fixed)] == 0).float().mean(1) == 0.3).all())  # a float share stays


def test_no_index_repeats_in_a_group_and_each_epoch_is_reproducible():
    data = labelled()
    sampler = training_groups("labels:1.0", data, 10, 4, seed=3)
    first = all_groups(sampler, 2)
    assert torch.equal(first, all_groups(training_groups("labels:1.0", data, 10, 4, seed=3), 2))
    assert not torch.equal(first, all_groups(sampler, 3))
    assert all(len(set(g.tolist())) == len(g) for g in first)
    resumed = torch.cat(list(sampler.epoch(2, start_step=7)))
    assert torch.equal(resumed, first[7 * 4 :])


def test_cluster_groups_are_random_until_assignments_and_warmup():
    data = labelled()
    sampler = training_groups("clusters:0", data, 8, 5, seed=0, warmup=2)
    assert isinstance(sampler, ClusterGroups) and sampler.reads_assignments
    random = all_groups(training_groups("random", data, 8, 5, seed=0), 3)
    assert torch.equal(all_groups(sampler, 3), random)  # no assignments yet
    clusters = (torch.arange(N) // 7) % 4
    sampler.set_assignments(clusters)
    assert torch.equal(all_groups(sampler, 1), all_groups(training_groups("random", data, 8, 5, seed=0), 1))
    pure = all_groups(sampler, 2)
    assert bool((clusters[pure] == clusters[pure][:, :1]).all())
    with pytest.raises(DataError):
        sampler.set_assignments(clusters[:10])


def test_fixed_groups_cut_the_datasets_groups_into_chunks():
    ids = torch.arange(96) // 32  # three groups of 32
    sampler = OwnGroups(ids, group_size=8, groups_per_step=2, seed=0)
    assert len(sampler) == 6
    chunks = all_groups(sampler, 0)
    assert bool((ids[chunks] == ids[chunks][:, :1]).all())
    assert sorted(chunks.flatten().tolist()) == list(range(96))
    assert not torch.equal(chunks, all_groups(sampler, 1))
    data = ImageSet(images=torch.zeros(96, 1, 2, 2, dtype=torch.uint8), name="g", groups=ids)
    with pytest.raises(DataError, match="own fixed groups"):
        training_groups("labels:0", data, 8, 1, 0)
    with pytest.raises(DataError, match="fewer than"):
        OwnGroups(ids, group_size=33)


def test_rounded_counts_sum_to_the_group_size():
    proportions = np.random.default_rng(0).dirichlet(np.ones(7), size=200)
    counts = rounded_counts(proportions, 13)
    assert bool((counts.sum(-1) == 13).all()) and bool(((counts - 13 * torch.from_numpy(proportions)).abs() < 1).all())
    # Largest remainder: 4.5 and 3.5 leave equal remainders, and the unit left goes to the first.
    assert rounded_counts([0.45, 0.35, 0.2], 10).tolist() == [5, 3, 2]
    assert rounded_counts([0.3, 0.7], 10).tolist() == [3, 7]  # 0.7 * 10 is 6.999...: still 7


def test_one_rounding_rule_for_every_share():
    """A tie (a share of 0.5 of an odd B) goes to the first part in training and in experiment groups."""
    domains = torch.tensor([0] * 50 + [1] * 50)
    assert MixedGroups(domains, group_size=7, mix=0.5).count_0 == 4
    labels = torch.arange(100) % 2
    groups = mixed_class_groups(labels, [0], [1], 0.5, num_groups=3, group_size=7, seed=0)
    assert (labels[groups] == 0).sum(1).tolist() == [4, 4, 4]
    groups = structured_groups(labels, None, 3, 7, seed=0, proportion={1: 0.5, 0: 0.5})
    assert (labels[groups] == 1).sum(1).tolist() == [4, 4, 4]


def test_draw_uses_each_index_once_per_pass_and_never_twice_in_a_group():
    pool = torch.arange(100, 113)  # 13 indices, groups of 5: groups straddle every pass
    drawn = draw(pool, [5] * 26, torch.Generator().manual_seed(0))
    assert len(drawn) == 130
    for p in range(10):
        assert sorted(drawn[13 * p : 13 * p + 13].tolist()) == pool.tolist()
    assert all(len(g.unique()) == 5 for g in drawn.view(26, 5))
    # Groups of uneven sizes, also larger than the pool (then repeats cannot be avoided).
    drawn = draw(pool, [3, 0, 12, 20, 1], torch.Generator().manual_seed(1))
    assert len(drawn) == 36 and len(drawn[3:15].unique()) == 12 and set(drawn.tolist()) == set(pool.tolist())
    with pytest.raises(DataError, match="empty pool"):
        draw(torch.empty(0, dtype=torch.long), [2], torch.Generator())


def sampler_kinds():
    data = labelled(domains=(torch.arange(N) >= N // 2).long())
    grouped = ImageSet(images=torch.zeros(96, 1, 2, 2, dtype=torch.uint8), name="g", groups=torch.arange(96) // 32)
    return {
        "random": lambda: training_groups("random", labelled(), 8, 2, seed=4),
        "mixed": lambda: training_groups("random", data, 8, 2, seed=4, mix=0.25),
        "beta mixed": lambda: training_groups("random", data, 8, 2, seed=4, mix="beta:0.5"),
        "labels": lambda: training_groups("labels:0.3", data, 8, 2, seed=4),
        "clusters": lambda: training_groups("clusters:0.3", data, 8, 2, seed=4),
        "fixed": lambda: training_groups("random", grouped, 8, 2, seed=4),
    }


@pytest.mark.parametrize("kind", list(sampler_kinds()))
def test_a_sampler_restored_from_its_state_dict_continues_exactly_like_the_original(kind, tmp_path):
    make = sampler_kinds()[kind]
    original = make()
    if original.reads_assignments:
        original.set_assignments((torch.arange(N) * 7 // 3) % 4)
    # Through a checkpoint file, loaded as a checkpoint is: without running code.
    torch.save(original.state_dict(), tmp_path / "state.pt")
    restored = make()
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for epoch in (0, 3):
        assert torch.equal(all_groups(original, epoch), all_groups(restored, epoch))
    assert torch.equal(torch.cat(list(original.epoch(3, 2))), torch.cat(list(restored.epoch(3, 2))))
    if original.reads_assignments:  # without its state, a cluster sampler would draw random groups instead
        assert not torch.equal(all_groups(make(), 3), all_groups(original, 3))
        restored.set_assignments(None)
        assert restored.state_dict()["assignments"] is None


def test_a_state_of_another_sampler_is_refused():
    clusters = training_groups("clusters:0.3", labelled(), 8, 2, seed=0)
    clusters.set_assignments(torch.zeros(N, dtype=torch.long))
    with pytest.raises(DataError, match="assignments.*`groups`"):
        RandomGroups(N, 8).load_state_dict(clusters.state_dict())
    with pytest.raises(DataError, match=r"\(10,\) assignments for 2000"):
        clusters.load_state_dict({"assignments": torch.zeros(10, dtype=torch.long)})


def test_specs_are_parsed_or_refused_in_one_line():
    assert parse_spec("random") == ("random", None) and parse_spec("labels:0.3") == ("labels", 0.3)
    assert parse_mix(0.4) == ("share", 0.4) and parse_mix("beta:2") == ("beta", 2.0)
    for bad in ("labels", "random:1", "clusters:x", "labels:-1", "kmeans:1", "labels:inf", "clusters:nan"):
        with pytest.raises(DataError, match="`groups`"):
            parse_spec(bad)
    for bad in ("beta:0", "beta:", "1.5", "half", "beta:inf", "beta:nan", "nan", "inf", float("inf")):
        with pytest.raises(DataError, match="`mix`"):
            parse_mix(bad)
    # Non-finite values never reach a sampler, where they failed at the first step with a broadcast error.
    for spec in ("labels:inf", "clusters:inf", "labels:1.7e308"):  # 1.7e308 failed inside numpy's Dirichlet
        with pytest.raises(DataError, match="ALPHA must be a number from 0 to 1e\\+06"):
            training_groups(spec, labelled(), 4, 1, 0)
    with pytest.raises(DataError, match="0 < A <= 1e\\+06"):
        training_groups("random", labelled(domains=(torch.arange(N) % 2)), 4, 1, 0, mix="beta:inf")
    unlabelled = ImageSet(images=torch.zeros(100, 1, 2, 2, dtype=torch.uint8), name="u")
    with pytest.raises(DataError, match="needs labels"):
        training_groups("labels:1", unlabelled, 4, 1, 0)


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


def test_fixed_groups_partition_the_test_split_the_same_way_every_time():
    groups = seeded_partition(103, 10, seed=1)
    assert (
        groups.shape == (10, 10) and len(groups.unique()) == 100 and torch.equal(groups, seeded_partition(103, 10, 1))
    )
    assert not torch.equal(groups, seeded_partition(103, 10, seed=2))
    with pytest.raises(DataError, match="fewer than one group of 8; lower `group_size`"):
        seeded_partition(7, 8)
