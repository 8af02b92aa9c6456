"""Sets in, sets out: what a set's beta generates, against a set's codes, its members and new real sets.

"More images like this set" is what a global latent offers a user. For held-out conditioning
sets of B images (held_out_sets.py) every generator of generators.py
makes M new images per set, for this run and for each baseline run (ML-VAE, VAE, GMVAE), next to
M new real images of the same source (the reference) and the model's prior (the floor).
Scores (experiments/set_generation/scores.py):

    factors   sets sharing a rotation angle and a contrast gain (`grouped:BASE`): R^2 of each
              factor read from the generated sets by three readers, fit on real images, on
              the run's reconstructions, and on the generator's own sets of the other half
              of the held-out sets (scored on the second half; the first fits that reader)
    mix       sets with class shares ~ Dirichlet(alpha), alpha in `alphas`, or one class per
              set (alpha 0, e.g. a folder:PATH run whose sub-folders are the sets): total
              variation between the classes of the generated images, read by a classifier fit
              on real training images, and the set's own shares
    both      novelty (distance to the nearest member against a new real image's) and
              within-set diversity (against the reference's)

The kinds default to what the run's data has: factors for `grouped:BASE` (BASE's test split),
mix for labelled data (its test split; the classifier reads its training split). Every run is
scored on the same sets (one seed).

Writes to a new RUN_DIR/experiments/set-generation[-n]/ (whole or absent, never over an earlier
output): results.json (every cell, with standard errors over sets), table.md (one table per
kind) and sets-<kind>.png (donor rows, each followed by the rows each generator made from it).
`compare --experiment set-generation` gives the tables over training seeds (over_seeds.py).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import pyro
import torch

from ...data import load_dataset, to_unit_float
from ...data.sampling import MAX_ALPHA
from ...errors import ConfigError, DataError
from ...progress import progress
from ...settings import Settings, seed_setting, setting
from ...trained import Run
from ...trained.config import MAX_GROUP_SIZE
from ..readers import ClassReader, ImageFactorReader, r2_per_factor
from .generators import generators, reconstructions
from .held_out_sets import FACTORS, HeldOutSets, factor_sets, mix_sets
from .scores import class_mix_tv, diversity, mean_and_se, novelty

NAME = "set-generation"
KINDS = ("factors", "mix")
REFERENCE = "new real images"
READERS = ("real images", "reconstructions", "own sets")
READER_FIT_IMAGES = 32  # generated images per set that fit an own-sets reader (all M are scored)


MAX_SETS = 10**4
MAX_GENERATED = 1024
MAX_IMAGES_PER_CELL = 2**20  # sets x generated: each generator's images of a cell are held at once


@dataclass(frozen=True)
class SetGenerationSettings(Settings):
    baseline_runs: list[str] = setting(
        [], "runs scored on the same sets (ML-VAE, VAE, GMVAE, other UG-VAEs)", "--baseline-runs", metavar="RUN_DIR"
    )
    group_sizes: list[int] = setting(
        [2, 4, 8, 32], "B: members of each conditioning set", at_least=2, at_most=MAX_GROUP_SIZE, metavar="B"
    )
    alphas: list[float] | None = setting(
        None,
        "Dirichlet alphas of the mix sets",
        at_least=0,
        at_most=MAX_ALPHA,
        default_is="0.1 0.3 1, or 0 (one class per set) for a folder:PATH run",
    )
    kinds: list[str] | None = setting(None, "held-out sets", choices=KINDS, default_is="from the run's data")
    sets: int = setting(200, "held-out sets per cell (kind, B, alpha)", at_least=4, at_most=MAX_SETS)
    generated: int = setting(
        64, "M: images each generator makes per set", "--generated", "-M", at_least=2, at_most=MAX_GENERATED
    )
    reader_sets: int = setting(
        100,
        "real sets of 32 that fit the real-image and reconstruction factor readers",
        at_least=2,
        at_most=MAX_SETS,
    )
    seed: int = seed_setting("seed of the sets and of the draws")
    data_dir: str | None = setting(None, "where the dataset is found", default_is="the run's own")
    shown: int = setting(3, "sets drawn in the PNG", at_least=1, at_most=64)

    def cross_field_problems(self) -> list[str]:
        if self.sets * self.generated > MAX_IMAGES_PER_CELL:
            return [
                f"`sets` x `generated` must be at most {MAX_IMAGES_PER_CELL} images per cell, got "
                f"{self.sets} x {self.generated}"
            ]
        return []


@dataclass
class SetGenerationResult:
    out_dir: str
    files: list[str]
    results: dict  # what results.json holds: every cell, with standard errors over sets
    table: str  # the Markdown of table.md


def base_name(dataset: str) -> str:
    kind, _, base = dataset.partition(":")
    return base if kind == "grouped" else dataset


def default_kinds(run, base) -> tuple[str, ...]:
    if run.train_cfg.dataset.startswith("grouped:"):
        return ("factors",)
    if base.labels is not None:
        return ("mix",)
    raise DataError(
        f"{run.train_cfg.dataset} has neither group factors (grouped:BASE) nor labels, so no held-out set has a "
        "known answer; use a run trained on grouped:BASE, a labelled dataset, or folder:PATH with sub-folders"
    )


def source_label(run) -> str:
    return f"{run.train_cfg.model} ({os.path.basename(os.path.normpath(run.run_dir))})"


def generate(gen, x: torch.Tensor, size: int, chunk: int = 50) -> torch.Tensor:
    """A generator over sets x (S, B, C, H, W) in chunks of sets; images back on the CPU."""
    return torch.cat([gen(part, size).cpu() for part in x.split(chunk)])


def rebuild(run, x: torch.Tensor, device, chunk: int = 50) -> torch.Tensor:
    """The run's reconstructions of sets x, on the CPU."""
    return torch.cat([reconstructions(run, part.to(device)).cpu() for part in x.split(chunk)])


def factor_cells(sources, base, settings, device, bar) -> list[dict]:
    """Rows of the factors kind: for each B, each (source, generator) and the reference."""
    pool = factor_sets(base, settings.reader_sets, 32, 2, settings.seed + 1)
    real = to_unit_float(pool.members)
    bar.set_postfix_str("fitting factor readers")
    real_reader = ImageFactorReader(real, pool.factors, settings.seed)
    rebuilt_readers = {}
    for label, run in sources:
        rebuilt_readers[label] = ImageFactorReader(rebuild(run, real, device), pool.factors, settings.seed)
    rows = []
    for B in settings.group_sizes:
        sets = factor_sets(base, settings.sets, B, settings.generated, settings.seed + 1000 * B)
        half = len(sets) // 2
        fit, score = slice(0, half), slice(half, None)
        x = to_unit_float(sets.members).to(device)
        for label, name, images in produce(sources, sets, x, settings, bar, f"factors B={B}"):
            own = ImageFactorReader(images[fit, :READER_FIT_IMAGES], sets.factors[fit], settings.seed)
            truth = sets.factors[score]
            readers = (real_reader, rebuilt_readers.get(label, real_reader), own)
            r2 = {reader: r2_per_factor(truth, read(images[score])) for reader, read in zip(READERS, readers)}
            if label == REFERENCE:
                r2["reconstructions"] = None  # real images have no reconstruction of their own
            rows.append(cell("factors", B, None, label, name, sets, images, r2=r2))
    return rows


def mix_cells(sources, base, train_base, alphas, settings, device, bar) -> tuple[list[dict], dict]:
    """Rows of the mix kind, and the classifier's accuracy on real test images and reconstructions."""
    bar.set_postfix_str("fitting the class reader")
    classify = ClassReader(to_unit_float(train_base.images), train_base.labels, settings.seed)
    per = min(32, len(base))  # the test images in groups, as the guide reads them
    images = to_unit_float(base.images[: per * (len(base) // per)]).view(-1, per, *base.x_shape)
    labels = base.labels[: images.shape[0] * per]
    accuracy = {"real test images": classify.accuracy(images.flatten(0, 1), labels)}
    for label, run in sources:
        rebuilt = rebuild(run, images, device)
        accuracy[f"{label}: reconstructions"] = classify.accuracy(rebuilt.flatten(0, 1), labels)
    rows = []
    for alpha in alphas:
        for B in settings.group_sizes:
            seed = settings.seed + 1000 * B + round(1000 * alpha)
            sets = mix_sets(base, settings.sets, B, settings.generated, alpha, seed)
            x = to_unit_float(sets.members).to(device)
            for label, name, images in produce(sources, sets, x, settings, bar, f"mix alpha={alpha:g} B={B}"):
                tv = mean_and_se(class_mix_tv(classify(images), sets.shares))
                rows.append(cell("mix", B, alpha, label, name, sets, images, tv=tv))
    return rows, accuracy


def produce(sources, sets: HeldOutSets, x: torch.Tensor, settings, bar, what: str):
    """(source label, generator name, images (S, M, C, H, W) float) for every generator, then the reference."""
    for label, run in sources:
        for name, gen in generators(run).items():
            bar.set_postfix_str(f"{what}: {label}, {name}")
            yield label, name, generate(gen, x, settings.generated)
            bar.update()
    yield REFERENCE, REFERENCE, to_unit_float(sets.reference)
    bar.update()


def cell(kind, B, alpha, label, name, sets: HeldOutSets, images, **scores) -> dict:
    return {
        "kind": kind,
        "group_size": B,
        "alpha": alpha,
        "source": label,
        "generator": name,
        "novelty": novelty(images, sets.members, sets.reference),
        "diversity": diversity(images, sets.reference),
        **scores,
    }


def set_generation(run: Run, settings: SetGenerationSettings | None = None) -> SetGenerationResult:
    """Sets in, sets out: what a set's beta generates, scored on held-out sets whose answer is known.

    Every generator (beta sampling, the set-code Gaussian, member code + noise, the set's q(d) mix,
    the prior) of this run and of each baseline run makes M images per held-out set of B images,
    beside new real images of the same source; class mixes are scored by total variation, factors
    by R^2, both by novelty and diversity (:doc:`/tutorials/set-generation`). Writes
    ``results.json``, ``table.md`` and ``sets-<kind>.png`` to a new
    ``RUN/experiments/set-generation[-n]/``; ``compare --experiment set-generation`` tables them
    over seeds.

    Parameters
    ----------
    run : Run
        A trained run (:func:`ugvae.load_run`): UG-VAE, ML-VAE, VAE or GMVAE, on ``grouped:BASE``,
        labelled data or ``folder:PATH``.
    settings : SetGenerationSettings, optional
        Default: ``SetGenerationSettings()``.

    Returns
    -------
    SetGenerationResult
        The folder, the files, the results and the Markdown table.

    Raises
    ------
    RunError
        A baseline run on other data, or data with neither labels nor factors.
    """
    from ...trained import load_run
    from ...trained.outputs import OutputFolder

    settings = settings or SetGenerationSettings()
    folder = OutputFolder(run.path("experiments"), NAME, run_dir=run.run_dir)
    baselines = [load_run(path, str(run.device)) for path in settings.baseline_runs]
    for other in baselines:
        if other.model_cfg.x_shape != run.model_cfg.x_shape:
            raise ConfigError(
                f"`baseline_runs`: {other.run_dir} makes images of shape {other.model_cfg.x_shape} but "
                f"{run.run_dir} makes {run.model_cfg.x_shape}; compare runs of the same data"
            )
    cfg = run.train_cfg
    name = base_name(cfg.dataset)
    data_dir = settings.data_dir or cfg.data_dir
    base = load_dataset(name, "test", data_dir, cfg.image_size)
    kinds = list(settings.kinds or default_kinds(run, base))
    alphas = list(settings.alphas or ([0.0] if name.startswith("folder:") else [0.1, 0.3, 1.0]))
    sources = [("this run", run)] + [(source_label(b), b) for b in baselines]
    per_cell = sum(len(generators(r)) for _, r in sources) + 1
    cells = len(settings.group_sizes) * sum(len(alphas) if k == "mix" else 1 for k in kinds)
    pyro.set_rng_seed(settings.seed)
    rows, diagnostics = [], {}
    with progress(total=cells * per_cell, desc=NAME, unit="cell") as bar:
        if "factors" in kinds:
            rows += factor_cells(sources, base, settings, run.device, bar)
        if "mix" in kinds:
            train_base = load_dataset(name, "train", data_dir, cfg.image_size)
            mix_rows, accuracy = mix_cells(sources, base, train_base, alphas, settings, run.device, bar)
            rows, diagnostics["classifier accuracy"] = rows + mix_rows, accuracy
    results = {
        "run": run.run_dir,
        "step": run.step,  # the checkpoint these numbers were computed from
        "dataset": cfg.dataset,
        "baselines": {source_label(b): b.run_dir for b in baselines},
        "settings": {**asdict(settings), "kinds": kinds, "alphas": alphas},
        "factor_names": FACTORS,
        "readers": list(READERS),
        "rows": rows,
        "diagnostics": diagnostics,
    }
    with folder:
        table = write_outputs(folder, results, sources, base, settings, run.device)
    return SetGenerationResult(folder.path, folder.files, results, table)


def report(result: SetGenerationResult) -> str:
    return result.table + f"wrote {result.out_dir}"


def write_outputs(folder, results: dict, sources, base, settings, device) -> str:
    """results.json, table.md and one PNG per kind in `folder` (an OutputFolder); returns the table."""
    from ...files import atomic_write_text
    from ..plotting import save_json
    from .tables import markdown_tables, save_sets_figure

    save_json(folder.file("results.json"), results)
    table = markdown_tables(results)
    atomic_write_text(folder.file("table.md"), table)
    alphas, shown_size = results["settings"]["alphas"], min(settings.group_sizes, key=lambda b: abs(b - 8))
    for kind in results["settings"]["kinds"]:
        if kind == "factors":
            sets = factor_sets(base, settings.shown, shown_size, settings.generated, settings.seed + 7)
        else:
            sets = mix_sets(
                base, settings.shown, shown_size, settings.generated, alphas[len(alphas) // 2], settings.seed
            )
        save_sets_figure(folder.file(f"sets-{kind}.png"), sources, sets, device, kind)
    return table
