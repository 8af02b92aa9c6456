"""Structured training groups: the law of each sampler on small data, and exact reproducibility."""

import numpy as np
import pytest
import torch

from ugvae.data import DataError, ImageSet, training_groups
from ugvae.data.training_groups import ClusterGroups, FixedGroups, parse_mix, parse_spec, rounded_counts

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
    sampler = FixedGroups(ids, group_size=8, groups_per_step=2, seed=0)
    assert len(sampler) == 6
    chunks = all_groups(sampler, 0)
    assert bool((ids[chunks] == ids[chunks][:, :1]).all())
    assert sorted(chunks.flatten().tolist()) == list(range(96))
    assert not torch.equal(chunks, all_groups(sampler, 1))
    data = ImageSet(images=torch.zeros(96, 1, 2, 2, dtype=torch.uint8), name="g", groups=ids)
    with pytest.raises(DataError, match="own fixed groups"):
        training_groups("labels:0", data, 8, 1, 0)
    with pytest.raises(DataError, match="fewer than"):
        FixedGroups(ids, group_size=33)


def test_rounded_counts_sum_to_the_group_size():
    proportions = np.random.default_rng(0).dirichlet(np.ones(7), size=200)
    counts = rounded_counts(proportions, 13)
    assert (counts.sum(-1) == 13).all() and (np.abs(counts - 13 * proportions) < 1).all()


def test_specs_are_parsed_or_refused_in_one_line():
    assert parse_spec("random") == ("random", None) and parse_spec("labels:0.3") == ("labels", 0.3)
    assert parse_mix(0.4) == ("share", 0.4) and parse_mix("beta:2") == ("beta", 2.0)
    for bad in ("labels", "random:1", "clusters:x", "labels:-1", "kmeans:1"):
        with pytest.raises(DataError):
            parse_spec(bad)
    for bad in ("beta:0", "beta:", "1.5", "half"):
        with pytest.raises(DataError):
            parse_mix(bad)
    unlabelled = ImageSet(images=torch.zeros(100, 1, 2, 2, dtype=torch.uint8), name="u")
    with pytest.raises(DataError, match="needs labels"):
        training_groups("labels:1", unlabelled, 4, 1, 0)
