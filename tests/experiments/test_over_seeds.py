"""`compare --experiment NAME`: an experiment's tables over training seeds, made by the package from the
runs' stored results (tiny hand-made results, so that every number can be checked by hand)."""

import json
import math
import os

import pytest

from ugvae import run
from ugvae.errors import RunError
from ugvae.experiments.commands.compare import CompareSettings, compare
from ugvae.experiments.over_seeds import escape, interval

T_1 = 12.706204736  # t_{0.975, 1}: the 95% interval of the mean of two seeds is T_1 * sd / sqrt(2)


def fake_run(root, name, experiment, results_file, results, test_elbo=80.0, config=None, folder=None):
    """A run directory holding only what the tables read: config.json, summary.json, its results."""
    run_dir = os.path.join(root, name)
    out = os.path.join(run_dir, "experiments", folder or experiment)
    os.makedirs(out)
    config = config or {"model": {"z_dim": 10}, "train": {"dataset": "mnist", "seed": 0}}
    json.dump(config, open(os.path.join(run_dir, "config.json"), "w"))
    summary = {"test_elbo": test_elbo, "beta_active_dims": 3, "beta_mi": 1.5}
    json.dump(summary, open(os.path.join(run_dir, "summary.json"), "w"))
    json.dump(results, open(os.path.join(out, results_file), "w"))
    return run_dir


def mix_rows(beta_tv, gauss_tv=0.40, B=8, alpha=0.3):
    def row(source, generator, tv, novelty=0.95):
        return dict(
            kind="mix", group_size=B, alpha=alpha, source=source, generator=generator, tv=[tv, 0.01], novelty=novelty
        )

    return [
        row("this run", "beta sampling", beta_tv),
        row("this run", "set-code Gaussian", gauss_tv),
        row("this run", "member code + noise", 0.12, novelty=0.5),
        row("this run", "set's q(d) mix", 0.25),
        row("this run", "beta ~ p(beta)", 0.70),
        row("mlvae (elsewhere)", "beta sampling", 0.99),  # a baseline run scored beside it: not this setting's
        row("new real images", "new real images", 0.17),
    ]


def test_set_generation_tables_give_means_intervals_baselines_costs_and_verdicts(tmp_path):
    runs = [
        fake_run(tmp_path, "mix-default-s0", "set-generation", "results.json", {"rows": mix_rows(0.30)}, 84.0),
        fake_run(tmp_path, "mix-default-s1", "set-generation", "results.json", {"rows": mix_rows(0.34)}, 86.0),
        fake_run(
            tmp_path,
            "mix-z3-s0",
            "set-generation",
            "results.json",
            {"rows": mix_rows(0.20, gauss_tv=0.30)},
            60.0,
            config={"model": {"z_dim": 3}, "train": {"dataset": "mnist", "seed": 0}},
        ),
    ]
    # An older result of the first run: only its newest folder is read.
    old = os.path.join(runs[0], "experiments", "set-generation-2")
    os.rename(os.path.join(runs[0], "experiments", "set-generation"), old)
    os.makedirs(os.path.join(runs[0], "experiments", "set-generation"))
    json.dump(
        {"rows": mix_rows(9.0)}, open(os.path.join(runs[0], "experiments", "set-generation", "results.json"), "w")
    )
    out = tmp_path / "out"
    assert run.main(["compare", *runs, "--experiment", "set-generation", "--out", str(out)]) == 0
    table = (out / "compare.md").read_text()
    assert os.listdir(out) == ["compare.md"]
    half = T_1 * math.sqrt(2 * 0.02**2) / math.sqrt(2)  # sd of (0.30, 0.34) is 0.02 * sqrt(2)
    assert f"| mix-default | 2 | **0.320 ± {half:.3f}** / 0.400 |" in table
    assert "| mix-z3 | 1 | **0.200** / 0.300 |" in table  # one seed: no interval
    for baseline in (
        "member code + noise (mix-default) | | 0.120",
        "set's q(d) mix (mix-default)",
        "prior (mix-default)",
    ):
        assert baseline in table
    assert "| new real images | | 0.170 |" in table and "0.99" not in table
    assert "| mix-z3 | 1 | 60.00 | +25.00 (mix-default) | `z_dim` 3 |" in table  # the cost of its ELBO
    assert (
        "- mix-default, class mix: alpha 0.3 B 8: MISSED (gap to real +0.150, vs set-code -0.080, novelty 0.95)"
        in table
    )
    assert "- mix-z3, test ELBO within 5 nats of mix-default: MISSED (+25.00)" in table


def test_group_factor_tables_put_settings_side_by_side(tmp_path):
    def results(beta_angle):
        summary = [
            {"group_size": 32, "features": "beta", "r2": [beta_angle, 0.9], "spread": None},
            {"group_size": 32, "features": "PCA of mean image", "r2": [0.89, 0.95], "spread": None},
        ]
        return {"factors": ["angle", "gain"], "summary": summary, "transfer": {"swapped vs donor's factor": [0.6, 0.2]}}

    runs = [fake_run(tmp_path, f"z3-s{s}", "group-factors", "results.json", results(0.8 + 0.1 * s)) for s in (0, 1)]
    runs.append(fake_run(tmp_path, "z10-s0", "group-factors", "results.json", results(0.7)))
    table = compare(runs, CompareSettings(out=str(tmp_path / "out"), experiment="group-factors")).table
    assert "| B | features | angle, z3 | gain, z3 | angle, z10 | gain, z10 |" in table
    mean, half = interval([0.8, 0.9])
    assert f"| 32 | beta | {mean:.3f} ± {half:.3f} | 0.900 ± 0.000 | 0.700 | 0.900 |" in table
    assert "| swapped vs donor's factor | 0.600 ± 0.000 | 0.200 ± 0.000 | 0.600 | 0.200 |" in table


def test_structured_batch_table_averages_the_quoted_tasks_and_beta_margins(tmp_path):
    def rows(beta):
        def row(task, B, features, test):
            return {"task": task, "group_size": B, "features": features, "classifier": "linear SVM", "test": test}

        out = []
        for features, accuracy in (
            ("ugvae (this run)", beta),
            ("untrained ugvae", 0.6),
            ("PCA of mean image", 0.7),
            ("local codes of ugvae (PCA)", 0.65),
        ):
            out += [row("even vs odd", 4, features, accuracy), row("even:odd 60/40 vs reverse", 32, features, accuracy)]
            out.append(row("even vs odd", 32, features, 0.0))  # not a quoted task: ignored
        return {"rows": out}

    runs = [
        fake_run(tmp_path, f"labels-s{s}", "structured-batches", "table.json", rows(0.75 + 0.05 * s)) for s in (0, 1)
    ]
    table = compare(runs, CompareSettings(out=str(tmp_path / "out"), experiment="structured-batches")).table
    head = next(line for line in table.splitlines() if line.startswith("| setting"))
    assert head.endswith(
        "| beta | untrained | PCA mean image | local codes | beta - best{untrained, PCA} | beta - local codes |"
    )
    beta, margin = interval([0.75, 0.80]), interval([0.05, 0.10])
    assert f"| {beta[0]:.3f} ± {beta[1]:.3f} |" in table and f"| +{margin[0]:.3f} ± {margin[1]:.3f} |" in table


def test_a_run_without_results_is_named_with_the_command_that_makes_them(tmp_path, capsys):
    empty = fake_run(tmp_path, "r-s0", "interpolation", "interpolation.json", {})
    with pytest.raises(RunError, match="has no set-generation results; run `experiment set-generation` on it first"):
        compare([empty], CompareSettings(out=str(tmp_path / "out"), experiment="set-generation"))
    assert not os.path.exists(tmp_path / "out")


def test_cells_escape_what_would_break_a_row():
    assert escape("a|b\nc") == "a\\|b c"
