"""The end-of-training figures (experiments/report.py): what they show, for every model."""

import csv
import os

import pytest
import torch
from pyro import poutine

from ugvae.experiments import report
from ugvae.model import MODELS
from ugvae.trained.metrics import METRIC_FIELDS


def write_metrics(run_dir, epochs: int = 6, steps_per_epoch: int = 10):
    """A short run whose first steps sit far below the rest, as every run's do."""
    with open(os.path.join(run_dir, "metrics.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, METRIC_FIELDS)
        writer.writeheader()
        for step in range(1, epochs * steps_per_epoch + 1):
            writer.writerow(
                {"step": step, "epoch": (step - 1) // steps_per_epoch, "kind": "step", "train_elbo": -900 / step}
            )
            if step % steps_per_epoch == 0:
                writer.writerow(
                    {"step": step, "epoch": step // steps_per_epoch - 1, "kind": "epoch", "test_elbo": -100 - 50 / step}
                )


def test_the_loss_curve_shows_the_whole_run(tmp_path, monkeypatch):
    """Issue 30 (4): the y-range cut at the test ELBO of the last three quarters hid most of a short run."""
    write_metrics(tmp_path)
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append((fig, path)))
    report.plot_loss_curve(str(tmp_path))
    ((fig, path),) = figures
    ax = fig.axes[0]
    plotted = torch.cat([torch.as_tensor(line.get_ydata(), dtype=torch.float64) for line in ax.get_lines()])
    low, high = ax.get_ylim()
    assert low <= plotted.min() and plotted.max() <= high and path.endswith("loss_curve.png")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_sample_grid_is_the_programs_own_draws_column_k_from_cluster_k(name, tiny_cfg):
    model = MODELS[name](tiny_cfg).eval()
    images, cols = report.sample_grid(model, rows=3, seed=1)
    assert cols == tiny_cfg.K and images.shape == (3 * tiny_cfg.K, *tiny_cfg.x_shape)
    # The same draws, by hand: the program with d fixed to the column, traced.
    torch.manual_seed(1)
    columns = torch.arange(tiny_cfg.K).expand(3, tiny_cfg.K)
    trace = poutine.trace(poutine.condition(model, {"d": columns})).get_trace(None, num_groups=3, group_size=tiny_cfg.K)
    beta = trace.nodes["beta"]["value"] if "beta" in trace.nodes else None
    torch.testing.assert_close(images, model.decode(trace.nodes["z"]["value"], beta).flatten(0, 1))
    if "d" in trace.nodes:
        assert torch.equal(trace.nodes["d"]["value"], columns)
