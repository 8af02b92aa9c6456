"""The four experiments on a GPU, where `--device auto` puts a run: every tensor they move to
the run's device must come back to the CPU for NumPy, scikit-learn and the figures."""

import json
import os

import pytest
import torch

from tests.helpers import tiny_train, train_small_images, write_domain
from ugvae.experiments.domain_alignment import DomainAlignmentSettings, domain_alignment
from ugvae.experiments.group_factors import GroupFactorsSettings, group_factors
from ugvae.experiments.interpolation import InterpolationSettings, interpolation
from ugvae.experiments.structured_batches import StructuredBatchesSettings, structured_batches
from ugvae.trained import load_run

DEVICE = "cuda"
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")


def test_every_experiment_runs_on_the_gpu(tmp_path_factory):
    plain = tiny_train(tmp_path_factory, "ugvae")
    run = load_run(plain, DEVICE)
    assert next(run.model.parameters()).device.type == DEVICE
    grids = interpolation(run, InterpolationSettings(rows=2, cols=2, beta_centre="posterior")).grids
    assert len(grids) == 3
    settings = StructuredBatchesSettings(
        group_sizes=[4], num_groups=4, samples=2, untrained_seeds=1, baseline_runs=[plain]
    )
    assert all(0 <= r["test"] <= 1 for r in structured_batches(run, settings).rows)

    grouped = load_run(tiny_train(tmp_path_factory, "ugvae", dataset="grouped:synthetic:200"), DEVICE)
    result = group_factors(grouped, GroupFactorsSettings(group_sizes=[4], num_groups=10, pairs=2, untrained_seeds=1))
    assert all(len(r2) == 2 for r2 in result.transfer.values())

    root = tmp_path_factory.mktemp("domains")
    dark, bright = write_domain(root / "dark", 40, 30), write_domain(root / "bright", 40, 220, seed=1)
    mixture = train_small_images(tmp_path_factory.mktemp("runs"), f"folder:{dark}+folder:{bright}", epochs=1)
    out = domain_alignment(load_run(mixture, DEVICE), DomainAlignmentSettings(num_groups=4, steps=2, probe_sizes=[2]))
    with open(os.path.join(out.out_dir, "domain_alignment.json")) as f:
        assert len(json.load(f)["accuracy_table"]) == 3
