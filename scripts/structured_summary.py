#!/usr/bin/env python
"""Beta against the baselines of structured-batches, averaged over the tasks the README quotes.

    python scripts/structured_summary.py RUN_DIR_OR_TABLE_JSON...

Reads RUN/experiments/structured-batches/table.json (or a table.json given directly); averages test accuracy over both
classifiers on the mixed-proportion tasks at B=32 and the pure-group tasks at B=4.
"""

from __future__ import annotations

import json
import os
import sys


def quoted(row: dict) -> bool:
    mixed = "vs reverse" in row["task"]
    return (mixed and row["group_size"] == 32) or (not mixed and row["group_size"] == 4)


def summary(path: str) -> dict:
    if not path.endswith(".json"):
        path = os.path.join(path, "experiments", "structured-batches", "table.json")
    rows = json.load(open(path))["rows"]
    rows = [r for r in rows if quoted(r)]
    sources = list(dict.fromkeys(r["features"] for r in rows))
    mean = {
        s: sum(r["test"] for r in rows if r["features"] == s) / sum(r["features"] == s for r in rows) for s in sources
    }
    beta = next(s for s in sources if s.endswith("(this run)"))
    untrained = next(s for s in sources if s.startswith("untrained"))
    local = next(s for s in sources if s.startswith("local codes"))
    best = max(mean[untrained], mean["PCA of mean image"])
    return {
        **mean,
        "beta - best of {untrained, PCA}": mean[beta] - best,
        "beta - local codes": mean[beta] - mean[local],
    }


if __name__ == "__main__":
    for run_dir in sys.argv[1:]:
        print(run_dir)
        for name, value in summary(run_dir).items():
            print(f"  {name:40s} {value:+.3f}")
