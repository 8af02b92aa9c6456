"""Structured-batch results over training seeds: `compare --experiment structured-batches`.

Per run, from its newest table.json (experiment.py): the test accuracy of each feature source,
averaged over both classifiers on the mixed-proportion tasks at the largest B and the
pure-group tasks at the smallest B (the README's quoted tasks: B = 32 and 4 with
`group_sizes 32 4`), and beta's margin over the best of the untrained guides and PCA, and over
the run's local codes. Per setting, with its test ELBO and beta diagnostics (summary.json):
mean ± 95% interval over seeds (experiments/over_seeds.py).
"""

from __future__ import annotations

from ..over_seeds import SeededRun, by_setting, check_reference, fmt

UNTRAINED, PCA, LOCAL = "untrained", "PCA mean image", "local codes"


def source_name(features: str) -> str:
    """A feature source's name, the same in every run: beta, untrained, PCA mean image, local codes,
    or a baseline run's model."""
    if features.endswith("(this run)"):
        return "beta"
    if features.startswith("untrained"):
        return UNTRAINED
    if features.startswith("local codes"):
        return LOCAL
    if features.startswith("PCA"):
        return PCA
    return features.split(" (")[0] + " run"


def quoted_accuracy(results: dict) -> dict[str, float]:
    """Mean test accuracy per source over the quoted tasks of the module docstring."""
    rows = results["rows"]
    sizes = [r["group_size"] for r in rows]
    largest, smallest = max(sizes), min(sizes)
    quoted = [
        r
        for r in rows
        if ("vs reverse" in r["task"] and r["group_size"] == largest)
        or ("vs reverse" not in r["task"] and r["group_size"] == smallest)
    ]
    out: dict[str, list[float]] = {}
    for r in quoted:
        out.setdefault(source_name(r["features"]), []).append(r["test"])
    means = {k: sum(v) / len(v) for k, v in out.items()}
    if {"beta", UNTRAINED, PCA, LOCAL} <= set(means):
        means["beta - best{untrained, PCA}"] = means["beta"] - max(means[UNTRAINED], means[PCA])
        means["beta - local codes"] = means["beta"] - means[LOCAL]
    return means


def seed_table(runs: list[SeededRun], reference: str | None = None) -> str:
    settings = by_setting(runs)
    check_reference(list(settings), reference)
    accuracy = {id(run): quoted_accuracy(run.results) for run in runs}
    columns = list(dict.fromkeys(k for a in accuracy.values() for k in a))
    columns.sort(key=lambda c: ("-" in c, c != "beta"))  # beta first, the margins last
    lines = [
        "Structured batches: test accuracy of SVMs on each group feature, mean over both classifiers of the mixed-"
        "proportion tasks at the largest B and the pure-group tasks at the smallest B; mean ± 95% interval over "
        "seeds.",
        "",
        "| setting | seeds | test ELBO | beta active dims | I(X; beta) | " + " | ".join(columns) + " |",
        "|---|---|---|---|---|" + "---|" * len(columns),
    ]
    for name, members in settings.items():
        summary = [run.summary for run in members]
        cells = [
            fmt([s.get("test_elbo") for s in summary], 2),
            fmt([s.get("beta_active_dims") for s in summary], 1),
            fmt([s.get("beta_mi") for s in summary], 2),
        ]
        cells += [fmt([accuracy[id(r)].get(c) for r in members], signed="-" in c) for c in columns]
        lines.append(f"| {name} | {len(members)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
