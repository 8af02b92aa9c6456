"""Structured batches: files and numbers of the table, a split by group and by image, every class's rule."""

import json
import os
import re

import pytest
import torch
from PIL import Image

from tests.helpers import fail_at_figure, files_under, tiny_train
from ugvae import progress
from ugvae import run as cli
from ugvae.data import DataError, ImageSet, load_dataset
from ugvae.errors import ConfigError, RunError
from ugvae.experiments.structured_batches import StructuredBatchesSettings
from ugvae.experiments.structured_batches import experiment as structured_batches
from ugvae.experiments.structured_batches import tasks as structured_tasks
from ugvae.experiments.structured_batches.classifiers import posterior_samples, svm_accuracies
from ugvae.guide import Guide
from ugvae.model import ModelConfig
from ugvae.trained import load_run
from ugvae.trained.inference import group_code
from ugvae.trained.outputs import latest_output

SIZES = [6, 3]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_train(tmp_path_factory, "ugvae")


def run_experiment(run_dir: str, **settings) -> structured_batches.StructuredBatchesResult:
    return structured_batches.structured_batches(load_run(run_dir), StructuredBatchesSettings(**settings))


@pytest.mark.slow
def test_writes_the_table_as_json_markdown_and_a_tsne_plot(tiny_run, tmp_path_factory, capsys, monkeypatch):
    monkeypatch.setattr(progress, "DELAY_S", 0)
    vae_run = tiny_train(tmp_path_factory, "vae")
    # Through the command line: a list flag, and --baseline-runs taking several runs.
    argv = ["experiment", "structured-batches", "--run", tiny_run, "--group-sizes", *map(str, SIZES)]
    assert cli.main([*argv, "--num-groups", "8", "--samples", "2", "--baseline-runs", tiny_run, vae_run]) == 0
    out = latest_output(os.path.join(tiny_run, "experiments"), "structured-batches")
    markdown = open(os.path.join(out, "table.md")).read()
    captured = capsys.readouterr()
    assert captured.out == markdown + f"wrote {out}\n"  # the report is the table
    # group sizes x tasks x feature sources (this run, 3 untrained, PCA, local codes, 2 baselines)
    cells = len(SIZES) * 6 * 8
    assert f"structured batches: 100% ({cells}/{cells} feature sets)" in captured.err
    assert "t-SNE: 100% (6/6 feature sets)" in captured.err
    table = json.load(open(os.path.join(out, "table.json")))
    sources = [
        "ugvae (this run)",
        "untrained ugvae",
        "PCA of mean image",
        "local codes of ugvae (PCA)",
        f"ugvae ({os.path.basename(tiny_run)})",
        f"vae ({os.path.basename(vae_run)})",
    ]
    tasks = {r["task"] for r in table["rows"]}
    assert {"even vs odd", "even vs odd vs random", "fibonacci vs prime", "even:odd 60/40 vs reverse"} <= tasks
    assert len(table["rows"]) == len(SIZES) * len(tasks) * len(sources) * 2
    assert {r["features"] for r in table["rows"]} == set(sources)
    assert all(0 <= r["train"] <= 1 and 0 <= r["test"] <= 1 for r in table["rows"])
    untrained = [r for r in table["rows"] if r["features"] == "untrained ugvae"]
    assert all(r["seeds"] == 3 and r["test_spread"] >= 0 for r in untrained)  # merged over the default 3 seeds
    # The same guide, as this run and as a baseline run, gives the same numbers.
    pairs = {
        (r["task"], r["group_size"], r["classifier"], r["features"]): (r["train"], r["test"]) for r in table["rows"]
    }
    assert all(pairs[k[:3] + ("ugvae (this run)",)] == pairs[k[:3] + (sources[4],)] for k in pairs)
    row = next(r for r in table["rows"] if r["task"] == "even vs odd vs random" and r["features"] == sources[2])
    line = next(
        x
        for x in markdown.splitlines()
        if x.startswith(f"| even vs odd vs random | {row['group_size']} | {row['classifier']} |")
    )
    assert re.split(r"\s*\|\s*", line)[6] == f"{row['train']:.2f} / {row['test']:.2f}"
    image = Image.open(os.path.join(out, "tsne.png")).convert("L")
    assert min(image.size) > 200 and image.getextrema()[0] < 100


def test_groups_follow_their_rule_and_train_and_test_groups_share_no_image():
    data = load_dataset("synthetic:200", "test")
    tasks, tsne_task = structured_tasks.structured_tasks("synthetic", data, share=0.75)
    first_half = torch.arange(len(data)) % 2 == 0
    for task in tasks:
        groups, labels, is_train = structured_tasks.draw_task(task, first_half, 5, 3, 4, seed=0)
        assert groups.shape == (8 * len(task.classes), 4)
        assert not set(groups[is_train].flatten().tolist()) & set(groups[~is_train].flatten().tolist())
        assert first_half[groups[is_train]].all() and not first_half[groups[~is_train]].any()
        for c, cls in enumerate(task.classes):
            digits = data.labels[groups[labels == c]]
            if cls.other is None:
                assert torch.isin(digits, torch.tensor(cls.classes)).all(), cls.name
            else:  # 3 of 4 from the first rule
                assert torch.isin(digits[:, :3], torch.tensor(cls.classes)).all()
                assert torch.isin(digits[:, 3:], torch.tensor(cls.other)).all()
    assert [c.name for c in tsne_task.classes] == ["even", "odd", "fibonacci", "prime", "random"]


def test_svm_accuracy_is_measured_on_held_out_groups():
    labels = torch.arange(60) % 2
    is_train = torch.arange(60) < 40
    noise = torch.randn(60, 3, generator=torch.Generator().manual_seed(0))
    separable = posterior_samples(labels[:, None] * 4.0 + noise, torch.ones(60, 3), 5, seed=0)
    assert all(acc["test"] > 0.9 for acc in svm_accuracies(separable, labels, is_train).values())
    # Held-out groups carry the opposite relation: scored on them alone, every classifier is always wrong.
    flipped = torch.where(is_train, labels, 1 - labels)
    swapped = posterior_samples(flipped[:, None] * 4.0 + noise, torch.full((60, 3), 0.1), 5, seed=0)
    for acc in svm_accuracies(swapped, labels, is_train).values():
        assert acc["train"] == 1.0 and acc["test"] == 0.0


def test_a_model_without_global_latent_uses_the_mean_of_z():
    class LocalOnlyGuide(Guide):  # the VAE's contract: no global latent
        def _local_posterior(self, x):
            z = x.flatten(2)[..., :2]
            return z, torch.ones_like(z), None

    x = torch.rand(2, 4, 1, 1, 3)  # 2 groups of 4
    loc, scale, description = group_code(LocalOnlyGuide(ModelConfig(x_shape=(1, 1, 3))), x)
    z = x.flatten(2)[..., :2]
    assert torch.allclose(loc, z.mean(1)) and torch.allclose(scale, torch.full((2, 2), 0.5))
    assert description == "group mean of E q(z|x)"


def test_celeba_tasks_read_the_attributes():
    names = ["Black_Hair", "Blond_Hair", "Male"]
    attributes = torch.stack([torch.arange(90) % 3 == 0, torch.arange(90) % 3 == 1, torch.arange(90) % 2 == 0], 1)
    data = ImageSet(
        images=torch.zeros(90, 1, 2, 2, dtype=torch.uint8),
        name="celeba",
        attributes=attributes.long(),
        attribute_names=names,
    )
    tasks, _ = structured_tasks.celeba_tasks(data, 0.6)
    black, blond = tasks[0].classes
    everyone = torch.ones(90, dtype=torch.bool)
    assert (attributes[black.draw(everyone, 4, 5, 0), 0]).all() and (attributes[blond.draw(everyone, 4, 5, 0), 1]).all()
    male, female = tasks[3].classes
    assert attributes[male.draw(everyone, 4, 5, 0), 2].all() and not attributes[female.draw(everyone, 4, 5, 0), 2].any()


@pytest.mark.slow
def test_posterior_means_and_a_baseline_on_other_data(tiny_run, tmp_path_factory):
    result = run_experiment(tiny_run, group_sizes=[4], num_groups=4, means=True)
    table = json.load(open(os.path.join(result.out_dir, "table.json")))
    assert table["settings"]["means"] and {r["group_size"] for r in table["rows"]} == {4}
    assert result.rows == table["rows"] and result.step == table["step"]
    assert [os.path.basename(f) for f in result.files] == ["table.json", "table.md", "tsne.png"]
    other = tiny_train(tmp_path_factory, "vae", dataset="synthetic:100")
    with pytest.raises(RunError, match="`baseline_runs`: .* same data"):
        run_experiment(tiny_run, group_sizes=[4], baseline_runs=[other])


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(group_sizes=[4, 0]), "`group_sizes` values must be between 1 and 1048576, got 0"),
        (dict(group_sizes=[]), "`group_sizes` needs at least one value"),
        (dict(num_groups=1), "`num_groups` must be between 2 and 65536, got 1"),
        (dict(test_fraction=1.0), "`test_fraction` must be > 0 and < 1, got 1.0"),
        (dict(mix=1.5), "`mix` must be between 0 and 1, got 1.5"),
        (dict(num_groups=2, test_fraction=0.8), "leaves no training group"),
    ],
)
def test_bad_settings_are_refused_by_field_before_any_work(tiny_run, settings, message):
    def written():
        out = os.path.join(tiny_run, "experiments")
        return {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in os.listdir(out)} if os.path.isdir(out) else {}

    before = written()
    with pytest.raises(ConfigError, match=message):
        run_experiment(tiny_run, **settings)
    assert written() == before


def test_datasets_without_rules_are_refused():
    data = load_dataset("synthetic:50", "test")
    with pytest.raises(DataError, match="domain-alignment"):
        structured_tasks.structured_tasks("mnist+fashion-mnist", data)
    with pytest.raises(DataError, match="Black_Hair"):
        structured_tasks.structured_tasks("celeba", data)


def test_a_killed_run_leaves_no_output_that_looks_complete(tiny_run, monkeypatch):
    """Issue 29 D10: table.json and table.md were written before the t-SNE figure, in place."""
    experiments = os.path.join(tiny_run, "experiments")
    before = files_under(experiments)
    fail_at_figure(monkeypatch, 1)
    with pytest.raises(RuntimeError, match="killed"):
        run_experiment(tiny_run, group_sizes=[4], num_groups=4, means=True)
    assert files_under(experiments) == before
