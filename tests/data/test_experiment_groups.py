"""data/experiment_groups.py: groups by class rule, mixed rules and attributes hold what they
promise, reproducibly, and bad requests are refused in one line."""

import pytest
import torch

from ugvae.data import (
    STRUCTURED_RULES,
    DataError,
    attribute_groups,
    mixed_class_groups,
    rule_classes,
    structured_groups,
)

LABELS = torch.arange(500) % 10


@pytest.mark.parametrize("dataset, rule", [(d, r) for d, rules in STRUCTURED_RULES.items() for r in rules])
def test_every_label_satisfies_the_rule(dataset, rule):
    classes = STRUCTURED_RULES[dataset][rule]
    groups = structured_groups(LABELS, classes, num_groups=8, group_size=16, seed=0)
    assert groups.shape == (8, 16) and groups.dtype == torch.long
    assert torch.isin(LABELS[groups], torch.tensor(classes)).all()
    assert all(len(g.unique()) == 16 for g in groups)  # no repeats within a group
    assert torch.equal(groups, structured_groups(LABELS, classes, 8, 16, seed=0))


def test_no_classes_means_the_whole_set_and_proportion_is_exact():
    assert structured_groups(LABELS, None, 4, 30, seed=1).shape == (4, 30)
    groups = structured_groups(LABELS, None, 4, 10, seed=1, proportion={3: 0.7, 8: 0.3})
    assert all((LABELS[g] == 3).sum() == 7 and (LABELS[g] == 8).sum() == 3 for g in groups)


def test_mixed_class_groups_proportions():
    even, odd = STRUCTURED_RULES["mnist"]["even"], STRUCTURED_RULES["mnist"]["odd"]
    groups = mixed_class_groups(LABELS, even, odd, frac_a=0.6, num_groups=5, group_size=20, seed=0)
    assert groups.shape == (5, 20)
    is_even = LABELS[groups] % 2 == 0
    assert is_even[:, :12].all() and not is_even[:, 12:].any()


def test_attribute_groups():
    names = ["Smiling", "Male"]
    attributes = torch.stack([torch.arange(100) % 2, torch.arange(100) % 3 == 0], dim=1).long()
    groups = attribute_groups(attributes, names, "Male", True, num_groups=3, group_size=5, seed=0)
    assert (attributes[groups, 1] == 1).all()
    with pytest.raises(DataError, match="Smiling, Male"):
        attribute_groups(attributes, names, "Bald", True, 3, 5, 0)


def test_structured_errors():
    with pytest.raises(DataError, match="no labels"):
        structured_groups(None, [1], 2, 2, 0)
    with pytest.raises(DataError, match=r"\[42\]"):
        structured_groups(LABELS, [42], 2, 2, 0)


def test_rule_classes_by_name():
    assert rule_classes("mnist", "prime") == [2, 3, 5, 7]
    with pytest.raises(DataError, match="even, odd, fibonacci, prime"):
        rule_classes("mnist", "square")
