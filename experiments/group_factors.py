"""Group factors: does beta recover, and render, what the members of a group share?

For a run trained on `grouped:BASE` (data/grouped.py), held-out groups are drawn from BASE's
test images with fresh factors (angle, gain), one draw per group shared by its B members.

Read: ridge regression, cross-validated over groups (5 folds; standardised features, penalty
chosen inside each fold), from a group feature to each hidden factor; R^2 per factor for

    beta            E q(beta | X) of the run (eq. 8-9)
    untrained       E q(beta | X) of freshly initialised guides (several seeds: mean and spread)
    PCA mean image  the group's mean image on beta_dim principal axes
    local codes     the group mean of [E q(z|x), pi] on beta_dim principal axes
    z_loc mean      the group mean of E q(z|x), all z_dim dims: how much of the factor z holds

Render (transfer): a regressor of the factors from images (an MLP on single images, its
predictions averaged over the group) is fitted on half the real groups. For pairs of groups
(own, donor) of the other half, decode own's E q(z|x) with donor's E q(beta|X) (eq. 2) and
read the factors of the result; R^2 against the donor's factor says whether beta renders the
factor, against the own factor whether z does. The regressor's R^2 on real held-out groups and
on own-with-own reconstructions bound what the transfer can show. Decoded means are smoother
than real images, so the same is repeated with a reader fit on reconstructions (own z, own
beta) of the fitting half.

Writes results.json, table.md, r2.png and transfer.png to a new RUN/experiments/group-factors[-n]/
(trained/outputs.py: whole or absent). `compare --experiment group-factors` gives the tables over
training seeds (`seed_tables`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..data import to_unit_float
from ..errors import DataError
from ..files import atomic_write_text
from ..progress import progress
from ..settings import Settings, seed_setting, setting
from ..trained import Run
from ..trained.config import MAX_GROUP_SIZE
from ..trained.inference import MAX_GROUPS, require_global_latent
from ..trained.outputs import OutputFolder
from .readers import ImageFactorReader, r2_per_factor

NAME = "group-factors"
FOLDS = 5


MAX_UNTRAINED_SEEDS = 64
MAX_PAIRS = 10**5


@dataclass(frozen=True)
class GroupFactorsSettings(Settings):
    group_sizes: list[int] = setting([32, 8], "B of held-out groups", at_least=1, at_most=MAX_GROUP_SIZE, metavar="B")
    num_groups: int = setting(
        300, "held-out groups per group size", at_least=2 * FOLDS, at_most=MAX_GROUPS, old_flags=("--groups",)
    )
    untrained_seeds: int = setting(3, "seeds of the untrained-guide baseline", at_least=1, at_most=MAX_UNTRAINED_SEEDS)
    pairs: int = setting(150, "(own, donor) pairs of the transfer test", at_least=2, at_most=MAX_PAIRS)
    seed: int = seed_setting("seed of the groups, factors and pairs")
    data_dir: str | None = setting(None, "where the base dataset is found", default_is="the run's own")


@dataclass
class GroupFactorsResult:
    out_dir: str
    files: list[str]
    factor_names: list[str]
    summary: list[dict]  # per group size and feature source: R^2 per factor (untrained seeds merged)
    transfer: dict[str, list[float]]  # what is read from which images -> R^2 per factor
    table: str  # the Markdown of table.md


def group_factors(run: Run, settings: GroupFactorsSettings | None = None) -> GroupFactorsResult:
    """Does beta recover, and render, what the members of a group share?

    For a run trained on ``grouped:BASE``: ridge regressions, cross-validated over held-out groups,
    from E q(beta | X) and from baselines (the untrained guide, PCA of the mean image, the run's
    local codes) to each hidden factor (angle, gain), and the transfer test (decode one group's z
    with a donor's beta, read the factors of the result). Writes ``results.json``, ``table.md``,
    ``r2.png`` and ``transfer.png`` to a new ``RUN/experiments/group-factors[-n]/``;
    ``compare --experiment group-factors`` tables them over seeds.

    Parameters
    ----------
    run : Run
        A trained run (:func:`ugvae.load_run`). It must be trained on ``grouped:BASE``.
    settings : GroupFactorsSettings, optional
        Default: ``GroupFactorsSettings()``.

    Returns
    -------
    GroupFactorsResult

    Raises
    ------
    RunError
        A run not trained on ``grouped:`` data.
    """
    from ..data import load_dataset
    from .group_features import untrained_guide
    from .plotting import save_grid, save_json

    settings = settings or GroupFactorsSettings()
    guide, model_cfg, train_cfg = run.guide, run.model_cfg, run.train_cfg
    kind, _, base_name = train_cfg.dataset.partition(":")
    if kind != "grouped":
        raise DataError(f"group factors need a run trained on grouped:BASE, not on {train_cfg.dataset}")
    require_global_latent(run, "there is no beta to read the factors from")
    folder = OutputFolder(run.path("experiments"), NAME, run_dir=run.run_dir)
    base = load_dataset(base_name, "test", settings.data_dir or train_cfg.data_dir, train_cfg.image_size)
    untrained = [
        untrained_guide(model_cfg, run.model_name, run.guide_name, seed).to(run.device)
        for seed in range(settings.untrained_seeds)
    ]
    sources = group_feature_sources(guide, untrained, model_cfg.beta_dim)
    rows, transfer_result, shown, factor_names = measure(run, base, sources, settings)
    summary = summarise(rows)
    table = markdown_table(summary, transfer_result, factor_names)
    with folder:
        save_json(
            folder.file("results.json"),
            {
                "run": run.run_dir,
                "step": run.step,  # the checkpoint these numbers were computed from
                "dataset": train_cfg.dataset,
                "factors": factor_names,
                "settings": {
                    k: getattr(settings, k) for k in ("group_sizes", "num_groups", "untrained_seeds", "pairs", "seed")
                },
                "rows": rows,
                "summary": summary,
                "transfer": transfer_result,
            },
        )
        atomic_write_text(folder.file("table.md"), table)
        bar_plot(folder.file("r2.png"), summary, factor_names)
        save_grid(folder.file("transfer.png"), shown.cpu(), 8, "rows: own group, donor group, own z + donor beta")
    return GroupFactorsResult(folder.path, folder.files, factor_names, summary, transfer_result, table)


def report(result: GroupFactorsResult) -> str:
    return result.table + f"wrote {result.out_dir}"


def measure(run: Run, base, sources: dict, settings: GroupFactorsSettings):
    """R^2 rows per group size and source, the transfer (at the first group size: it fits an image
    regressor), its picture, and the factor names."""
    G, rows, transfer_result = settings.num_groups, [], None
    with progress(total=len(settings.group_sizes) * len(sources) + 1, desc="group factors", unit="step") as bar:
        for B in settings.group_sizes:
            data = held_out_groups(base, G, B, settings.seed + B)
            groups = torch.arange(len(data)).view(G, B)
            factors = data.factors[groups[:, 0]]
            everything = torch.ones(G, dtype=torch.bool)
            for source, encode in sources.items():
                r2 = cross_validated_r2(encode(data.images, groups, everything), factors, settings.seed)
                rows.append({"group_size": B, "features": source, "r2": r2})
                bar.update()
            if transfer_result is None:
                x = chunk(data.images, groups).to(run.device)
                transfer_result, shown = transfer(run.model, run.guide, x, factors, settings.pairs, settings.seed)
                bar.update()
    return rows, transfer_result, shown, list(data.factor_names)


def held_out_groups(base, num_groups: int, group_size: int, seed: int):
    """An ImageSet of num_groups * group_size images (group g at rows g*B..) with factors drawn per group."""
    from ..data.grouped import factor_groups
    from ..data.sampling import draw_groups

    generator = torch.Generator().manual_seed(seed)
    members = draw_groups(torch.arange(len(base)), num_groups, group_size, generator)
    return factor_groups(base, members, generator)


def cross_validated_r2(features: torch.Tensor, factors: torch.Tensor, seed: int) -> list[float]:
    """R^2 per factor of ridge predictions made for each group by a model fitted on the other folds."""
    import numpy as np
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    folds = KFold(FOLDS, shuffle=True, random_state=seed)
    predicted = cross_val_predict(ridge, features.double().numpy(), factors.numpy(), cv=folds)
    return [float(r2_score(factors[:, f].numpy(), predicted[:, f])) for f in range(factors.shape[1])]


@torch.no_grad()
def transfer(
    model, guide, x: torch.Tensor, factors: torch.Tensor, pairs: int, seed: int
) -> tuple[dict[str, list[float]], torch.Tensor]:
    """Transfer R^2 for groups x (G, B, C, H, W) in [0, 1] and their factors (G, F): the first
    half fits the reader, `pairs` (own, donor) pairs of the second are swapped. Also returns a
    picture of the first three pairs (own, donor, swapped; up to 8 images each)."""
    G = x.shape[0]
    fit, test = torch.arange(G // 2), torch.arange(G // 2, G)
    reader = ImageFactorReader(x[fit], factors[fit], seed)
    generator = torch.Generator().manual_seed(seed + 1)
    own = test[torch.randint(len(test), (pairs,), generator=generator)]
    donor = test[torch.randint(len(test), (pairs,), generator=generator)]
    z_loc = guide.local_posterior(x[own]).z_loc
    beta_own, beta_donor = guide.global_posterior(x[own]).loc, guide.global_posterior(x[donor]).loc
    swapped = model.decode(z_loc, beta_donor[:, None])
    rebuilt = model.decode(z_loc, beta_own[:, None])
    read_swapped = reader(swapped)
    # Decoded means are smoother than real digits; a reader fit on reconstructions knows that style.
    fit_rebuilt = model.decode(guide.local_posterior(x[fit]).z_loc, guide.global_posterior(x[fit]).loc[:, None])
    style_reader = ImageFactorReader(fit_rebuilt, factors[fit], seed)
    style_swapped = style_reader(swapped)
    result = {
        "reader on real held-out groups": r2_per_factor(factors[test], reader(x[test])),
        "reader on reconstructions": r2_per_factor(factors[own], reader(rebuilt)),
        "swapped vs donor's factor": r2_per_factor(factors[donor], read_swapped),
        "swapped vs own factor": r2_per_factor(factors[own], read_swapped),
        "reconstruction-fit reader on reconstructions": r2_per_factor(factors[own], style_reader(rebuilt)),
        "reconstruction-fit reader: swapped vs donor's": r2_per_factor(factors[donor], style_swapped),
        "reconstruction-fit reader: swapped vs own": r2_per_factor(factors[own], style_swapped),
    }
    # A picture of the first pairs: own group, donor group, own z with donor's beta.
    shown = torch.cat([torch.cat([x[own[i], :8], x[donor[i], :8], swapped[i, :8]]) for i in range(min(3, pairs))])
    return result, shown


def group_feature_sources(guide, untrained: list, beta_dim: int) -> dict[str, Callable[..., torch.Tensor]]:
    """Feature sources (images, groups, is_train) -> features (G, D): the posterior means of the
    sources of experiments/structured_batches/features.py."""
    from .group_features import encode_groups, group_local_codes, local_code_features, pca_features

    def posterior_mean(g):
        return lambda images, groups, is_train: encode_groups(g, images, groups).loc

    def first(source):
        return lambda images, groups, is_train: source(images, groups, is_train)[0]

    sources = {"beta (this run)": posterior_mean(guide)}
    sources.update({f"{UNTRAINED} (seed {s})": posterior_mean(g) for s, g in enumerate(untrained)})
    sources["PCA of mean image"] = first(pca_features(beta_dim))
    sources["local codes [z_loc, pi] (PCA)"] = first(local_code_features(guide, beta_dim))
    sources["z_loc group mean"] = lambda images, groups, is_train: group_local_codes(guide, images, groups, False)
    return sources


UNTRAINED = "untrained guide"


def summarise(rows: list[dict]) -> list[dict]:
    """Rows with the untrained seeds merged into one: mean and spread (std) over seeds."""
    out = []
    for B in dict.fromkeys(r["group_size"] for r in rows):
        mine = [r for r in rows if r["group_size"] == B]
        seeds = torch.tensor([r["r2"] for r in mine if r["features"].startswith(UNTRAINED)])
        for r in mine:
            if not r["features"].startswith(UNTRAINED):
                out.append({**r, "spread": None})
            elif r is next(m for m in mine if m["features"].startswith(UNTRAINED)):
                spread = seeds.std(0, unbiased=len(seeds) > 1) if len(seeds) > 1 else torch.zeros(seeds.shape[1])
                out.append(
                    {
                        "group_size": B,
                        "features": f"{UNTRAINED} ({len(seeds)} seeds)",
                        "r2": seeds.mean(0).tolist(),
                        "spread": spread.tolist(),
                    }
                )
    return out


def markdown_table(summary: list[dict], transfer_result: dict, factor_names: list[str]) -> str:
    def cell(r, f):
        return f"{r['r2'][f]:.3f}" + (f" ± {r['spread'][f]:.3f}" if r["spread"] else "")

    lines = [
        "Cross-validated ridge R^2 from a group feature to each hidden factor (held-out groups).",
        "",
        "| B | features | " + " | ".join(factor_names) + " |",
        "|---|---|" + "---|" * len(factor_names),
    ]
    lines += [
        f"| {r['group_size']} | {r['features']} | " + " | ".join(cell(r, f) for f in range(len(factor_names))) + " |"
        for r in summary
    ]
    lines += ["", "Transfer (own z, donor's beta), R^2 of the factors read from images.", ""]
    lines += ["| read | " + " | ".join(factor_names) + " |", "|---|" + "---|" * len(factor_names)]
    lines += [f"| {k} | " + " | ".join(f"{v:.3f}" for v in values) + " |" for k, values in transfer_result.items()]
    return "\n".join(lines) + "\n"


def bar_plot(path: str, summary: list[dict], factor_names: list[str]):
    import matplotlib.pyplot as plt

    from .plotting import save_figure

    sizes = list(dict.fromkeys(r["group_size"] for r in summary))
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 3.8), squeeze=False)
    for ax, B in zip(axes[0], sizes):
        rows = [r for r in summary if r["group_size"] == B]
        width = 0.8 / len(factor_names)
        for f, name in enumerate(factor_names):
            values = [max(r["r2"][f], -0.2) for r in rows]
            errors = [r["spread"][f] if r["spread"] else 0.0 for r in rows]
            ax.bar([i + f * width for i in range(len(rows))], values, width, yerr=errors, label=name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
        ax.set_xticklabels([r["features"] for r in rows], rotation=30, ha="right", fontsize=7)
        ax.set_ylim(-0.2, 1.0), ax.set_ylabel("R^2 (held-out groups)"), ax.set_title(f"B = {B}")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def chunk(images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return to_unit_float(images[idx])


def seed_tables(runs, reference: str | None = None) -> str:
    """`compare --experiment group-factors`: the R^2 of `summarise` and the transfer table, per setting
    (runs grouped as in experiments/over_seeds.py), mean ± 95% interval over seeds."""
    from .over_seeds import by_setting, check_reference, fmt

    settings = by_setting(runs)
    check_reference(list(settings), reference)
    factors = runs[0].results["factors"]
    columns = [(name, f) for name in settings for f in range(len(factors))]
    head = " | ".join(f"{factors[f]}, {name}" for name, f in columns)

    def r2(name, key, f, part):
        values = []
        for run in settings[name]:
            rows = (
                run.results[part]
                if part == "transfer"
                else {(r["group_size"], r["features"]): r for r in run.results[part]}
            )
            found = rows.get(key)
            values += [] if found is None else [(found if part == "transfer" else found["r2"])[f]]
        return fmt(values)

    seeds = ", ".join(f"{name} {len(runs)}" for name, runs in settings.items())
    lines = [
        f"Cross-validated ridge R^2 from a group feature to each hidden factor (held-out groups), mean ± 95% "
        f"interval over training seeds ({seeds}).",
        "",
        f"| B | features | {head} |",
        "|---|---|" + "---|" * len(columns),
    ]
    for row in runs[0].results["summary"]:
        key = (row["group_size"], row["features"])
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(r2(n, key, f, "summary") for n, f in columns) + " |")
    lines += ["", "Transfer (own z, donor's beta), R^2 of the factors read from images.", ""]
    lines += [f"| read | {head} |", "|---|" + "---|" * len(columns)]
    for key in runs[0].results["transfer"]:
        lines.append(f"| {key} | " + " | ".join(r2(n, key, f, "transfer") for n, f in columns) + " |")
    return "\n".join(lines) + "\n"
