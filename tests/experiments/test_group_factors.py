"""The group-factors experiment on a tiny run trained on grouped data: its files and numbers."""

import json
import os

import pytest

from tests.helpers import fail_at_figure, files_under, tiny_train
from ugvae import progress
from ugvae import run as cli
from ugvae.data import DataError
from ugvae.errors import ConfigError
from ugvae.experiments import group_factors
from ugvae.experiments.group_factors import GroupFactorsSettings
from ugvae.trained import load_run

ARGS = ["--group-sizes", "8", "4", "--num-groups", "20", "--pairs", "6", "--untrained-seeds", "2"]


@pytest.fixture(scope="module")
def grouped_run(tmp_path_factory):
    return tiny_train(tmp_path_factory, "ugvae", dataset="grouped:synthetic:200")


@pytest.mark.slow
def test_writes_r2_of_every_source_and_the_transfer(grouped_run, capsys, monkeypatch):
    monkeypatch.setattr(progress, "DELAY_S", 0)
    assert cli.main(["experiment", "group-factors", "--run", grouped_run, *ARGS]) == 0
    out = os.path.join(grouped_run, "experiments", "group-factors")
    assert {"results.json", "table.md", "r2.png", "transfer.png"} <= set(os.listdir(out))
    result = json.load(open(os.path.join(out, "results.json")))
    assert result["factors"] == ["angle", "gain"]
    assert result["settings"] == {"group_sizes": [8, 4], "num_groups": 20, "untrained_seeds": 2, "pairs": 6, "seed": 0}
    sources = {
        "beta (this run)",
        "untrained guide (2 seeds)",
        "PCA of mean image",
        "local codes [z_loc, pi] (PCA)",
        "z_loc group mean",
    }
    for B in (8, 4):
        rows = [r for r in result["summary"] if r["group_size"] == B]
        assert {r["features"] for r in rows} == sources
        assert all(len(r["r2"]) == 2 and all(v <= 1 for v in r["r2"]) for r in rows)
    assert len([r for r in result["rows"] if r["features"].startswith("untrained")]) == 2 * 2  # seeds x sizes
    assert {"reader on real held-out groups", "swapped vs donor's factor", "swapped vs own factor"} <= set(
        result["transfer"]
    )
    assert all(len(v) == 2 and all(x <= 1 for x in v) for v in result["transfer"].values())
    table = open(os.path.join(out, "table.md")).read()
    assert "| 8 | beta (this run) |" in table
    captured = capsys.readouterr()
    assert captured.out == table + f"wrote {out}\n"  # the report is the table
    # 2 group sizes x 6 feature sources (this run, 2 untrained, PCA, local codes, z_loc), then the transfer
    assert "group factors: 100% (13/13 steps)" in captured.err


def test_the_result_is_what_the_files_hold(grouped_run):
    settings = GroupFactorsSettings(group_sizes=[4], num_groups=10, pairs=2, untrained_seeds=1, seed=3)
    result = group_factors.group_factors(load_run(grouped_run), settings)
    saved = json.load(open(os.path.join(result.out_dir, "results.json")))
    assert result.summary == saved["summary"] and result.transfer == saved["transfer"]
    assert result.factor_names == ["angle", "gain"] and saved["settings"]["seed"] == 3
    assert result.table == open(os.path.join(result.out_dir, "table.md")).read()
    assert [os.path.basename(f) for f in result.files] == ["results.json", "table.md", "r2.png", "transfer.png"]


def test_refuses_a_run_without_group_factors_and_bad_settings(tmp_path_factory, grouped_run):
    plain = tiny_train(tmp_path_factory, "ugvae")
    with pytest.raises(DataError, match="grouped:BASE"):
        group_factors.group_factors(load_run(plain), GroupFactorsSettings(num_groups=20))
    with pytest.raises(ConfigError, match="`num_groups` must be between 10 and 65536, got 9"):
        GroupFactorsSettings(num_groups=9)
    with pytest.raises(ConfigError, match="`pairs` must be between 2 and 100000, got 1"):
        group_factors.group_factors(load_run(grouped_run), GroupFactorsSettings(pairs=1))


def test_a_killed_run_leaves_no_output_that_looks_complete(grouped_run, monkeypatch):
    """Issue 29 D10: results.json, table.md and r2.png were in place before transfer.png was written."""
    experiments = os.path.join(grouped_run, "experiments")
    before = files_under(experiments)
    fail_at_figure(monkeypatch, 2)
    settings = GroupFactorsSettings(group_sizes=[4], num_groups=10, pairs=2, untrained_seeds=1)
    with pytest.raises(RuntimeError, match="killed"):
        group_factors.group_factors(load_run(grouped_run), settings)
    assert files_under(experiments) == before
