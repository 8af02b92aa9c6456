"""The groups experiments draw: by class rule (`structured_groups`, `mixed_class_groups`, the
rules of `STRUCTURED_RULES`) or by attribute (`attribute_groups`).

Each is reproducible from its seed and follows sampling.py's two rules: members are drawn from
fresh permutations of their pool (`draw`), and the shares of a group become whole counts by
largest remainder (`rounded_counts`).
"""

from __future__ import annotations

import torch

from ..errors import DataError
from .sampling import compose, draw_groups, rounded_counts

STRUCTURED_RULES = {
    "mnist": {"even": [0, 2, 4, 6, 8], "odd": [1, 3, 5, 7, 9], "fibonacci": [0, 1, 2, 3, 5, 8], "prime": [2, 3, 5, 7]},
    "fashion-mnist": {"tops": [0, 2, 4, 6], "footwear": [5, 7, 9]},
}


def rule_classes(dataset: str, rule: str) -> list[int]:
    """The classes of a named rule of :data:`STRUCTURED_RULES`.

    Parameters
    ----------
    dataset : str
        ``mnist`` or ``fashion-mnist``.
    rule : str
        A rule of that dataset, e.g. ``"prime"``.

    Examples
    --------
    >>> rule_classes("mnist", "prime")
    [2, 3, 5, 7]

    Raises
    ------
    DataError
        A dataset without rules, or an unknown rule; the message lists the choices.
    """
    rules = STRUCTURED_RULES.get(dataset)
    if rules is None:
        raise DataError(f"no structured rules for dataset '{dataset}'; choose one of {', '.join(STRUCTURED_RULES)}")
    if rule not in rules:
        raise DataError(f"rule '{rule}' is unknown for {dataset}; choose one of {', '.join(rules)}")
    return list(rules[rule])


def structured_groups(
    labels: torch.Tensor | None,
    classes: list[int] | None,
    num_groups: int,
    group_size: int,
    seed: int,
    proportion: dict[int, float] | None = None,
) -> torch.Tensor:
    """Indices (num_groups, group_size) of groups whose labels lie in `classes`.

    Parameters
    ----------
    labels : torch.Tensor or None
        Labels (N,) of the images.
    classes : list of int or None
        The classes a group's members are drawn from; None: any label.
    num_groups, group_size : int
        How many groups, of how many images.
    seed : int
        The same seed draws the same groups.
    proportion : dict, optional
        Class -> fraction of every group drawn from that class (it replaces `classes`); members
        sit class after class in its order.

    Raises
    ------
    DataError
        No labels, or fractions that are negative or do not sum to 1.
    """
    labels = check_labels(labels)
    check_sizes(num_groups, group_size)
    generator = torch.Generator().manual_seed(seed)
    if proportion is None:
        return draw_groups(pool_of(labels, classes), num_groups, group_size, generator)
    shares = list(proportion.values())
    if not shares or any(not f >= 0 for f in shares) or abs(sum(shares) - 1.0) > 1e-6:
        raise DataError(f"proportion {proportion} must hold fractions >= 0 that sum to 1; rescale them")
    return class_groups(labels, [[c] for c in proportion], shares, num_groups, group_size, generator)


def mixed_class_groups(
    labels: torch.Tensor | None,
    classes_a: list[int],
    classes_b: list[int],
    frac_a: float,
    num_groups: int,
    group_size: int,
    seed: int,
) -> torch.Tensor:
    """Indices (num_groups, group_size) of groups whose first `frac_a` x B members (rounded) hold
    `classes_a` and the rest `classes_b`: the mixed-proportion task of the structured batches.

    Parameters
    ----------
    labels : torch.Tensor or None
        Labels (N,) of the images.
    classes_a, classes_b : list of int
        The classes of the two rules.
    frac_a : float
        The share of rule A in every group, in [0, 1].
    num_groups, group_size : int
        How many groups, of how many images.
    seed : int
        The same seed draws the same groups.

    Raises
    ------
    DataError
        No labels, or `frac_a` outside [0, 1].
    """
    labels = check_labels(labels)
    check_sizes(num_groups, group_size)
    if not 0.0 <= frac_a <= 1.0:
        raise DataError(f"frac_a {frac_a} is outside [0, 1]; give the fraction of each group drawn from rule A")
    generator = torch.Generator().manual_seed(seed)
    return class_groups(labels, [classes_a, classes_b], [frac_a, 1 - frac_a], num_groups, group_size, generator)


def attribute_groups(
    attributes: torch.Tensor | None,
    attribute_names: list[str],
    attribute: str,
    value: bool,
    num_groups: int,
    group_size: int,
    seed: int,
) -> torch.Tensor:
    """Indices (num_groups, group_size) of groups of images whose `attribute` equals `value`.

    Parameters
    ----------
    attributes : torch.Tensor or None
        Attributes (N, A) of the images (CelebA's); an attribute counts as true when > 0.
    attribute_names : list of str
        The A names.
    attribute : str
        The attribute's name, e.g. ``"Male"``.
    value : bool
        The value every member has.
    num_groups, group_size : int
        How many groups, of how many images.
    seed : int
        The same seed draws the same groups.

    Raises
    ------
    DataError
        Data without attributes, or an unknown attribute.
    """
    if attributes is None:
        raise DataError("this dataset has no attributes; attribute groups need a set such as celeba")
    if attribute not in attribute_names:
        raise DataError(f"attribute '{attribute}' is unknown; choose one of {', '.join(attribute_names)}")
    check_sizes(num_groups, group_size)
    column = attributes[:, attribute_names.index(attribute)].cpu() > 0
    pool = torch.nonzero(column == bool(value)).flatten()
    if not len(pool):
        raise DataError(f"no sample has {attribute} == {bool(value)}; choose another attribute or value")
    return draw_groups(pool, num_groups, group_size, torch.Generator().manual_seed(seed))


def class_groups(labels, class_sets, shares, num_groups, group_size, generator) -> torch.Tensor:
    """Groups holding the rounded share of each set of classes, set after set; a set of no share may be empty."""
    counts = rounded_counts(shares, group_size).expand(num_groups, -1)
    pools = [pool_of(labels, c) if int(k) else torch.empty(0, dtype=torch.long) for c, k in zip(class_sets, counts[0])]
    return compose(pools, counts, generator, shuffle=False)


def check_labels(labels: torch.Tensor | None) -> torch.Tensor:
    if labels is None:
        raise DataError("this dataset has no labels; structured groups need a labelled set such as mnist")
    return labels.cpu()


def check_sizes(num_groups: int, group_size: int) -> None:
    if num_groups < 1 or group_size < 1:
        raise DataError(f"{num_groups} groups of {group_size} were asked for; both must be at least 1")


def pool_of(labels: torch.Tensor, classes: list[int] | None) -> torch.Tensor:
    if classes is None:
        return torch.arange(len(labels))
    pool = torch.nonzero(torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))).flatten()
    if not len(pool):
        raise DataError(
            f"no sample has a label in {list(classes)}; check the classes against the dataset's class_names"
        )
    return pool
