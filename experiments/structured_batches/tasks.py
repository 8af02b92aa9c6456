"""The tasks of structured batches: groups that follow a rule, mix two, or are random (table 1).

A rule is a set of classes (even, odd, Fibonacci or prime digits; Fashion-MNIST tops or
footwear; CelebA black or blond hair, male or female: attributes as pseudo-labels). A task
asks to tell apart groups of two rules, of two rules and random groups, or of two mixes of a
pair of rules in share/1-share vs the reverse proportion. Groups that train a classifier are
drawn from one half of the images and those that test it from the other (`draw_task`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...data import STRUCTURED_RULES, DataError, ImageSet, mixed_class_groups, structured_groups

# Which rule set each labelled dataset uses, and the paper's pairings of rules.
RULE_SETS = {"mnist": "mnist", "digits": "mnist", "synthetic": "mnist", "fashion-mnist": "fashion-mnist"}
PAIRINGS = {"mnist": [("even", "odd"), ("fibonacci", "prime")], "fashion-mnist": [("tops", "footwear")]}


@dataclass(eq=False)
class GroupClass:
    """Groups whose first round(share * B) members have a label in `classes` and the rest in `other`."""

    name: str
    labels: torch.Tensor  # (N,) the label each rule reads; -1 for no class
    classes: list[int]
    other: list[int] | None = None
    share: float = 1.0

    def draw(self, allowed: torch.Tensor, num_groups: int, group_size: int, seed: int) -> torch.Tensor:
        labels = torch.where(allowed, self.labels, -1)  # images outside `allowed` join no pool
        if self.other is None:
            return structured_groups(labels, self.classes, num_groups, group_size, seed)
        return mixed_class_groups(labels, self.classes, self.other, self.share, num_groups, group_size, seed)


@dataclass
class Task:
    name: str
    classes: list[GroupClass] = field(default_factory=list)


def pair_tasks(a: GroupClass, b: GroupClass, random: GroupClass, share: float) -> list[Task]:
    """The paper's two tasks for a pair of rules, plus the harder mixed-proportion task."""
    mix = f"{round(100 * share)}/{round(100 * (1 - share))}"
    return [
        Task(f"{a.name} vs {b.name}", [a, b]),
        Task(f"{a.name} vs {b.name} vs random", [a, b, random]),
        Task(
            f"{a.name}:{b.name} {mix} vs reverse",
            [
                GroupClass(f"{mix} {a.name}:{b.name}", a.labels, a.classes, b.classes, share),
                GroupClass(f"{mix} {b.name}:{a.name}", a.labels, b.classes, a.classes, share),
            ],
        ),
    ]


def structured_tasks(dataset: str, data: ImageSet, share: float = 0.6) -> tuple[list[Task], Task]:
    """The classification tasks for a dataset, and the classes shown together in the t-SNE plot."""
    key = dataset.partition(":")[0]
    if key == "celeba":
        return celeba_tasks(data, share)
    if key not in RULE_SETS or "+" in dataset:
        raise DataError(
            f"structured batches need mnist, fashion-mnist, digits, synthetic or celeba, not '{dataset}'; "
            "for a mixture of datasets use the domain-alignment experiment"
        )
    if data.labels is None:
        raise DataError(f"dataset '{dataset}' has no labels, so no group follows a rule; use a labelled dataset")
    rules = STRUCTURED_RULES[RULE_SETS[key]]
    by_rule = {name: GroupClass(name, data.labels, list(classes)) for name, classes in rules.items()}
    random = GroupClass("random", data.labels, sorted(set(data.labels.tolist())))
    tasks = [t for a, b in PAIRINGS[RULE_SETS[key]] for t in pair_tasks(by_rule[a], by_rule[b], random, share)]
    return tasks, Task("every rule and random", [*by_rule.values(), random])


def celeba_tasks(data: ImageSet, share: float) -> tuple[list[Task], Task]:
    """Table 1's CelebA tasks: black vs blond hair and male vs female, as pseudo-labels."""
    names = data.attribute_names
    if data.attributes is None or not {"Black_Hair", "Blond_Hair", "Male"} <= set(names):
        raise DataError(
            "CelebA tasks need the Black_Hair, Blond_Hair and Male attributes; load celeba with its attribute file"
        )
    on = data.attributes > 0
    black, blond, male = (on[:, names.index(a)] for a in ("Black_Hair", "Blond_Hair", "Male"))
    hair = torch.full((len(data),), 2)  # 2: neither or both, present only in random groups
    hair[black & ~blond], hair[blond & ~black] = 0, 1
    sex = torch.where(male, 0, 1)
    classes = [
        GroupClass("black hair", hair, [0]),
        GroupClass("blond hair", hair, [1]),
        GroupClass("male", sex, [0]),
        GroupClass("female", sex, [1]),
    ]
    random = GroupClass("random", sex, [0, 1])
    tasks = pair_tasks(classes[0], classes[1], random, share) + pair_tasks(classes[2], classes[3], random, share)
    return tasks, Task("attributes and random", [*classes, random])


def draw_task(task: Task, first_half: torch.Tensor, num_train: int, num_test: int, group_size: int, seed: int):
    """groups (G, B), class labels (G,), is_train (G,).

    Training groups come from the images in `first_half`, test groups from the others.
    """
    groups, labels, is_train = [], [], []
    for c, cls in enumerate(task.classes):
        for allowed, n, train in ((first_half, num_train, True), (~first_half, num_test, False)):
            groups.append(cls.draw(allowed, n, group_size, seed + 2 * c + int(train)))
            labels.append(torch.full((n,), c))
            is_train.append(torch.full((n,), train))
    return torch.cat(groups), torch.cat(labels), torch.cat(is_train)
