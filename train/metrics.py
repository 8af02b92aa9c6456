"""Numbers logged during training: per-sample ELBOs and how the mixture is used."""

from __future__ import annotations

import csv
import math
import os

import torch

from train.runs import atomic_write_bytes

METRIC_FIELDS = [
    "step",
    "epoch",
    "train_elbo",
    "test_elbo",
    "cluster_entropy",
    "clusters_used",
    "clusters_used_argmax",
    # beta diagnostics on test groups (train/diagnostics.py)
    "beta_kl",
    "beta_mi",
    "beta_mi_bound",
    "beta_marginal_kl",
    "beta_active_dims",
    "beta_spread",
    "pixel_change_beta",
    "pixel_change_z",
    "elapsed_s",
]
USAGE_THRESHOLD = 0.02


def cluster_usage(pi: torch.Tensor) -> dict:
    """Usage of K clusters from q(d|z) probabilities pi (N, K).

    Entropy (nats) of the mean of pi (log K when all are used evenly), the number of clusters
    holding >= 2% of that mass, and the same count for hard argmax assignments, which also
    catches a q(d|z) that stays uniform everywhere.
    """
    pi = pi.reshape(-1, pi.shape[-1]).double()
    mean = pi.mean(0)
    entropy = -(mean * mean.clamp_min(1e-30).log()).sum().item()
    hard = torch.bincount(pi.argmax(-1), minlength=pi.shape[-1]).double() / pi.shape[0]
    return {
        "cluster_entropy": entropy,
        "clusters_used": int((mean >= USAGE_THRESHOLD).sum()),
        "clusters_used_argmax": int((hard >= USAGE_THRESHOLD).sum()),
        "cluster_shares": [round(v, 4) for v in mean.tolist()],
    }


class MetricsLog:
    """Appends rows to RUN_DIR/metrics.csv; a row per logged step and a fuller one per epoch."""

    def __init__(self, path: str):
        self.path = path
        if not os.path.exists(path):
            with open(path, "w", newline="") as f:
                csv.DictWriter(f, METRIC_FIELDS).writeheader()

    def write(self, **row):
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, METRIC_FIELDS).writerow({k: row.get(k, "") for k in METRIC_FIELDS})

    def truncate_after(self, step: int):
        """Drop rows logged after `step`: a resumed run logs those steps again.

        The rewrite is atomic, and a last line torn by a crash mid-append (no newline) is dropped.
        """
        with open(self.path, newline="") as f:
            text = f.read()
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()
        kept = [line for line in lines[1:] if line.split(",", 1)[0].isdigit() and int(line.split(",", 1)[0]) <= step]
        atomic_write_bytes(self.path, "".join(lines[:1] + kept).encode())


def read_metrics(path: str) -> list[dict]:
    """Rows of a metrics.csv with numbers parsed (missing values as NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        parsed = {k: (float(v) if v not in ("", None) else math.nan) for k, v in r.items() if k in METRIC_FIELDS}
        parsed["step"], parsed["epoch"] = int(parsed["step"]), int(parsed["epoch"])
        out.append(parsed)
    return out
