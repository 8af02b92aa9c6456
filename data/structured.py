"""Groups built for experiments: by class rule (even, odd, prime...), by a mix of two rules, or by an attribute."""

from __future__ import annotations

import torch

from ..errors import DataError

STRUCTURED_RULES = {
    "mnist": {"even": [0, 2, 4, 6, 8], "odd": [1, 3, 5, 7, 9], "fibonacci": [0, 1, 2, 3, 5, 8], "prime": [2, 3, 5, 7]},
    "fashion-mnist": {"tops": [0, 2, 4, 6], "footwear": [5, 7, 9]},
}


def rule_classes(dataset: str, rule: str) -> list[int]:
    """The classes of a named rule, e.g. rule_classes('mnist', 'prime')."""
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
    """(num_groups, group_size) indices whose labels lie in `classes` (None: any label).

    `proportion`, if given, maps class -> fraction of every group drawn from that class (it replaces
    `classes`); counts are rounded and the remainder goes to the class with the largest fraction.
    Within a group no index repeats while the pool is large enough; groups are drawn independently.
    """
    labels = check_labels(labels)
    check_sizes(num_groups, group_size)
    generator = torch.Generator().manual_seed(seed)
    if proportion is None:
        return draw_groups(pool_of(labels, classes), num_groups, group_size, generator)
    counts = split_counts(proportion, group_size)
    parts = [draw_groups(pool_of(labels, [c]), num_groups, k, generator) for c, k in counts.items() if k]
    return torch.cat(parts, dim=1)


def mixed_class_groups(
    labels: torch.Tensor | None,
    classes_a: list[int],
    classes_b: list[int],
    frac_a: float,
    num_groups: int,
    group_size: int,
    seed: int,
) -> torch.Tensor:
    """Groups whose first round(frac_a * B) columns come from classes_a and the rest from classes_b."""
    labels = check_labels(labels)
    check_sizes(num_groups, group_size)
    if not 0.0 <= frac_a <= 1.0:
        raise DataError(f"frac_a {frac_a} is outside [0, 1]; give the fraction of each group drawn from rule A")
    count_a = int(frac_a * group_size + 0.5)
    generator = torch.Generator().manual_seed(seed)
    parts = [
        draw_groups(pool_of(labels, classes), num_groups, count, generator)
        for classes, count in ((classes_a, count_a), (classes_b, group_size - count_a))
        if count
    ]
    return torch.cat(parts, dim=1)


def attribute_groups(
    attributes: torch.Tensor | None,
    attribute_names: list[str],
    attribute: str,
    value: bool,
    num_groups: int,
    group_size: int,
    seed: int,
) -> torch.Tensor:
    """Groups of samples whose attribute equals `value` (an attribute counts as true when > 0)."""
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


def split_counts(proportion: dict[int, float], group_size: int) -> dict[int, int]:
    total = sum(proportion.values())
    if not proportion or any(f < 0 for f in proportion.values()) or abs(total - 1.0) > 1e-6:
        raise DataError(f"proportion {proportion} must hold fractions >= 0 that sum to 1; rescale them")
    counts = {c: int(f * group_size) for c, f in proportion.items()}
    largest = max(proportion, key=proportion.get)
    counts[largest] += group_size - sum(counts.values())
    return counts


def draw_groups(pool: torch.Tensor, num_groups: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Each row is a fresh draw: without replacement when the pool holds `size` samples, with it otherwise."""
    if len(pool) >= size:
        rows = [pool[torch.randperm(len(pool), generator=generator)[:size]] for _ in range(num_groups)]
        return torch.stack(rows)
    return pool[torch.randint(len(pool), (num_groups, size), generator=generator)]
