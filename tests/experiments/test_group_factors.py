"""The group-factors experiment on a tiny run trained on grouped data: its files and numbers."""

import json
import os

import pytest

from tests.experiments.conftest import run_cli, tiny_train
from ugvae.data import DataError
from ugvae.experiments import group_factors

ARGS = ["--group-sizes", "8", "4", "--groups", "20", "--pairs", "6", "--untrained-seeds", "2"]


@pytest.fixture(scope="module")
def grouped_run(tmp_path_factory):
    return tiny_train(tmp_path_factory, "ugvae", dataset="grouped:synthetic:200")


def test_writes_r2_of_every_source_and_the_transfer(grouped_run):
    assert run_cli(group_factors, "--run", grouped_run, *ARGS) == 0
    out = os.path.join(grouped_run, "experiments", "group-factors")
    assert {"results.json", "table.md", "r2.png", "transfer.png"} <= set(os.listdir(out))
    result = json.load(open(os.path.join(out, "results.json")))
    assert result["factors"] == ["angle", "gain"]
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
    assert "| 8 | beta (this run) |" in open(os.path.join(out, "table.md")).read()


def test_refuses_a_run_without_group_factors(tmp_path_factory):
    plain = tiny_train(tmp_path_factory, "ugvae")
    with pytest.raises(DataError, match="grouped:BASE"):
        run_cli(group_factors, "--run", plain, *ARGS)
