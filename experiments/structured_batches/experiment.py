"""Structured batches: does q(beta | X) tell the rule behind a group? (section 4.3, table 1, fig. 7)

Test groups of B images follow a rule (even, odd, Fibonacci or prime digits; Fashion-MNIST
tops or footwear; CelebA black or blond hair, male or female), mix two rules in 60/40 vs
40/60 proportion, or are random. Each group is encoded by the run's q(beta | X) (eq. 8-9),
and linear / RBF SVMs classify samples of it, or its mean with `means` (classifiers.py).
The groups whose features train the SVMs and those that test them come from disjoint halves
of the test split, so they share no image. Every task is repeated for each group size and each feature source:
the run, untrained guides of the same architecture (several seeds, reported as mean ± spread),
PCA of the group's mean image, the group mean of the run's own local codes [z_loc, pi] on
beta_dim principal axes, and any baseline run (experiments/group_features.py). The tasks are
those of tasks.py. Writes table.json, table.md and tsne.png (fig. 7: t-SNE of the posterior
means) to a new RUN/experiments/structured-batches[-n]/ (whole or absent); `compare
--experiment structured-batches` gives the table over runs (`seed_table`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from sklearn.manifold import TSNE

from ...data import ImageSet, load_dataset
from ...errors import RunError
from ...files import atomic_write_text
from ...progress import progress
from ...settings import MAX_SEED, Settings, seed_setting, setting
from ...trained import Run, load_run
from ...trained.config import MAX_GROUP_SIZE
from ...trained.inference import MAX_GROUPS
from ...trained.outputs import OutputFolder
from ..group_features import FeatureSource, guide_features, local_code_features, pca_features, untrained_guide
from ..plotting import save_figure, save_json
from .classifiers import posterior_samples, svm_accuracies
from .tasks import Task, draw_task, structured_tasks

NAME = "structured-batches"


@dataclass(frozen=True)
class StructuredBatchesSettings(Settings):
    group_sizes: list[int] = setting(
        [128, 8, 4], "B of the test groups", at_least=1, at_most=MAX_GROUP_SIZE, metavar="B"
    )
    num_groups: int = setting(
        100, "groups per class (train + test)", at_least=2, at_most=MAX_GROUPS, old_flags=("--groups",)
    )
    test_fraction: float = setting(0.3, "share of each class's groups held out", above=0, below=1)
    samples: int = setting(10, "beta posterior samples per group", at_least=1, at_most=10**4)
    means: bool = setting(
        False, "classify the posterior means (one point per group) instead of samples", negatable=False
    )
    mix: float = setting(0.6, "share of rule A in the mixed-proportion task", at_least=0, at_most=1)
    baseline_runs: list[str] = setting(
        [],
        "runs of baseline models (ML-VAE, VAE, ...) to add as feature sources",
        "--baseline-runs",
        old_flags=("--baseline-run",),
        metavar="RUN_DIR",
    )
    seed: int = seed_setting("seed of the groups, samples and untrained guides")
    untrained_seeds: int = setting(3, "untrained guides, seeds SEED, SEED+1, ...", at_least=1, at_most=64)
    data_dir: str | None = setting(None, "where the dataset is found", default_is="the run's own")

    def cross_field_problems(self) -> list[str]:
        problems = []
        if held_out_count(self.num_groups, self.test_fraction) >= self.num_groups:
            problems.append(
                f"`test_fraction` {self.test_fraction} of `num_groups` {self.num_groups} leaves no training group; "
                "lower `test_fraction` or raise `num_groups`"
            )
        if self.seed + self.untrained_seeds - 1 > MAX_SEED:
            problems.append(f"`seed` + `untrained_seeds` - 1 must be at most {MAX_SEED}; lower `seed`")
        return problems


@dataclass
class StructuredBatchesResult:
    out_dir: str
    files: list[str]
    rows: list[dict]  # one per (task, group size, feature source, classifier); untrained seeds merged
    table: str  # the Markdown of table.md
    step: int  # the checkpoint the numbers were computed from


def structured_batches(run: Run, settings: StructuredBatchesSettings | None = None) -> StructuredBatchesResult:
    """Structured batches (section 4.3, table 1, fig. 7): does q(beta | X) tell the rule behind a group?

    Groups follow a rule (even, odd, Fibonacci or prime digits; tops or footwear; hair colour),
    mix two rules 60/40 against 40/60, or are random; linear and RBF SVMs classify E q(beta | X) (or
    samples of it) against the untrained guide, PCA of the mean image, the run's local codes and
    any baseline run. Writes ``table.json``, ``table.md`` and ``tsne.png`` to a new
    ``RUN/experiments/structured-batches[-n]/``.

    Parameters
    ----------
    run : Run
        A trained run (:func:`ugvae.load_run`).
    settings : StructuredBatchesSettings, optional
        Default: ``StructuredBatchesSettings()``.

    Returns
    -------
    StructuredBatchesResult

    Raises
    ------
    DataError
        A dataset without rules (MNIST, Fashion-MNIST and CelebA have them).
    """
    settings = settings or StructuredBatchesSettings()
    train_cfg = run.train_cfg
    data = load_dataset(train_cfg.dataset, "test", settings.data_dir or train_cfg.data_dir, train_cfg.image_size)
    tasks, tsne_task = structured_tasks(train_cfg.dataset, data, settings.mix)
    sources = feature_sources(run, settings)
    folder = OutputFolder(run.path("experiments"), NAME, run_dir=run.run_dir)
    rows = classification_rows(tasks, sources, data, settings)
    numbers = {
        k: getattr(settings, k)
        for k in ("group_sizes", "num_groups", "test_fraction", "samples", "means", "mix", "untrained_seeds", "seed")
    }
    table = markdown_table(rows, list(dict.fromkeys(r["features"] for r in rows)), settings.means)
    # One panel per source; the first untrained seed stands for them all.
    shown = {k: v for k, v in sources.items() if SEED_MARK not in k or k.endswith(f"{SEED_MARK}{settings.seed})")}
    with folder:
        save_json(
            folder.file("table.json"),
            {
                "run": run.run_dir,
                "step": run.step,  # the checkpoint these numbers were computed from
                "dataset": train_cfg.dataset,
                "settings": numbers,
                "rows": rows,
            },
        )
        atomic_write_text(folder.file("table.md"), table)
        tsne_plot(
            folder.file("tsne.png"), tsne_task, data, shown, settings.num_groups, settings.group_sizes[0], settings.seed
        )
    return StructuredBatchesResult(folder.path, folder.files, rows, table, run.step)


def report(result: StructuredBatchesResult) -> str:
    return result.table + f"wrote {result.out_dir}"


def held_out_count(groups: int, test_fraction: float) -> int:
    return max(1, round(groups * test_fraction))


def feature_sources(run: Run, settings: StructuredBatchesSettings) -> dict[str, FeatureSource]:
    """The run, its untrained twins, PCA of the mean image, its local codes and each baseline run."""
    model_cfg, model = run.model_cfg, run.model_name
    sources = {f"{model} (this run)": guide_features(run.guide)}
    for seed in range(settings.seed, settings.seed + settings.untrained_seeds):
        untrained = untrained_guide(model_cfg, model, run.guide_name, seed).to(run.device)
        sources[f"{untrained_name(model)}{SEED_MARK}{seed})"] = guide_features(untrained)
    sources["PCA of mean image"] = pca_features(model_cfg.beta_dim)
    sources[f"local codes of {model} (PCA)"] = local_code_features(run.guide, model_cfg.beta_dim)
    for run_dir in settings.baseline_runs:
        other = load_run(run_dir, str(run.device))
        if other.model_cfg.x_shape != model_cfg.x_shape or other.train_cfg.dataset != run.train_cfg.dataset:
            raise RunError(
                f"`baseline_runs`: {run_dir} was trained on {other.train_cfg.dataset}, not "
                f"{run.train_cfg.dataset}; pass baselines trained on the same data"
            )
        label = f"{other.model_name} ({os.path.basename(os.path.normpath(run_dir))})"
        sources[label] = guide_features(other.guide)
    return sources


SEED_MARK = " (seed "


def untrained_name(model: str) -> str:
    return f"untrained {model}"


def merge_seeds(rows: list[dict]) -> list[dict]:
    """Rows of the untrained guides' seeds merged into one per cell: mean, and spread (std over seeds)."""
    merged, cells = [], {}
    for r in rows:
        name, seeded, _ = r["features"].partition(SEED_MARK)
        if not seeded:
            merged.append(r)
            continue
        key = (r["task"], r["group_size"], r["classifier"], name)
        if key not in cells:
            cells[key] = {**r, "features": name, "seeds": []}
            merged.append(cells[key])
        cells[key]["seeds"].append((r["train"], r["test"]))
    for cell in cells.values():
        train, test = torch.tensor(cell.pop("seeds"), dtype=torch.float64).T
        cell["train"], cell["test"] = train.mean().item(), test.mean().item()
        cell["test_spread"] = test.std(unbiased=False).item()
        cell["seeds"] = len(test)
    return merged


def image_halves(n: int, seed: int) -> torch.Tensor:
    """A random half of the images (True) for the SVMs' training groups; the rest make test groups."""
    first_half = torch.zeros(n, dtype=torch.bool)
    first_half[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: n // 2]] = True
    return first_half


def classification_rows(
    tasks: list[Task], sources: dict[str, FeatureSource], data: ImageSet, settings: StructuredBatchesSettings
) -> list[dict]:
    """One row per (group size, task, feature source, classifier) with train and test accuracy."""
    seed = settings.seed
    first_half = image_halves(len(data), seed)
    num_test = held_out_count(settings.num_groups, settings.test_fraction)
    rows = []
    cells = len(settings.group_sizes) * len(tasks) * len(sources)
    with progress(total=cells, desc="structured batches", unit="feature set") as bar:
        for B in settings.group_sizes:
            for t, task in enumerate(tasks):
                groups, labels, is_train = draw_task(
                    task, first_half, settings.num_groups - num_test, num_test, B, seed + 100 * t
                )
                for source, encode in sources.items():
                    loc, scale = encode(data.images, groups, is_train)
                    features = (
                        loc.unsqueeze(1) if settings.means else posterior_samples(loc, scale, settings.samples, seed)
                    )
                    for classifier, acc in svm_accuracies(features, labels, is_train, seed).items():
                        rows.append(
                            {
                                "task": task.name,
                                "group_size": B,
                                "classes": [c.name for c in task.classes],
                                "features": source,
                                "classifier": classifier,
                                **acc,
                            }
                        )
                    bar.update()
    return merge_seeds(rows)


def markdown_table(rows: list[dict], sources: list[str], means: bool = False) -> str:
    """Table 1's layout, one `train / test` column per feature source."""
    cell = {
        (r["task"], r["group_size"], r["classifier"], r["features"]): f"{r['train']:.2f} / {r['test']:.2f}"
        + (f" ± {r['test_spread']:.2f}" if "test_spread" in r else "")
        for r in rows
    }
    keys = list(dict.fromkeys((r["task"], r["group_size"], r["classifier"]) for r in rows))
    lines = [
        "| Batch categories | B | Classifier | " + " | ".join(sources) + " |",
        "|---|---|---|" + "---|" * len(sources),
    ]
    lines += [
        f"| {task} | {B} | {clf} | " + " | ".join(cell[(task, B, clf, s)] for s in sources) + " |"
        for task, B, clf in keys
    ]
    read = "means" if means else "samples"
    spread = " (untrained guides: mean over seeds ± std of test accuracy)"
    return f"Train / test accuracy of SVMs on {read} of the group posterior{spread}.\n\n" + "\n".join(lines) + "\n"


def tsne_plot(
    path: str, task: Task, data: ImageSet, sources: dict[str, FeatureSource], groups_per_class: int, B: int, seed: int
):
    """Fig. 7: t-SNE of posterior means of groups of every class, one panel per feature source."""
    everything = torch.ones(len(data), dtype=torch.bool)
    groups = torch.cat([c.draw(everything, groups_per_class, B, seed + 7 + i) for i, c in enumerate(task.classes)])
    labels = torch.arange(len(task.classes)).repeat_interleave(groups_per_class)
    fig, axes = plt.subplots(1, len(sources), figsize=(4.2 * len(sources), 4.2), squeeze=False)
    for i, (name, encode) in enumerate(progress(sources.items(), desc="t-SNE", unit="feature set")):
        ax = axes[0][i]
        loc, _ = encode(data.images, groups, torch.ones(len(groups), dtype=torch.bool))
        # Exact t-SNE is quick for a few hundred groups, and Barnes-Hut's threads crawl on a busy CPU.
        method = "exact" if len(loc) <= 1000 else "barnes_hut"
        xy = TSNE(2, perplexity=min(30.0, len(loc) - 1.0), init="pca", method=method, random_state=seed).fit_transform(
            loc.numpy()
        )
        for c, cls in enumerate(task.classes):
            ax.scatter(*xy[(labels == c).numpy()].T, s=8, alpha=0.7, label=cls.name)
        ax.set_title(f"{name}, B={B}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    axes[0][0].legend(fontsize=7, markerscale=2)
    save_figure(fig, path)
