#!/usr/bin/env python
"""Mean ± std over runs (training seeds) of the group-factors results, as one Markdown table.

    python scripts/group_factors_summary.py RUN_DIR...

Reads RUN/experiments/group-factors/results.json of each run (same settings assumed).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def load(run_dir: str) -> dict:
    return json.load(open(os.path.join(run_dir, "experiments", "group-factors", "results.json")))


def cell(values: list[list[float]], f: int) -> str:
    column = np.array(values)[:, f]
    return f"{column.mean():.3f}" + (f" ± {column.std():.3f}" if len(column) > 1 else "")


def table(run_dirs: list[str]) -> str:
    results = [load(r) for r in run_dirs]
    factors = results[0]["factors"]
    lines = [
        f"{len(results)} run(s); ± is the std over runs.",
        "",
        "| B | features | " + " | ".join(factors) + " |",
        "|---|---|" + "---|" * len(factors),
    ]
    for i, row in enumerate(results[0]["summary"]):
        values = [r["summary"][i]["r2"] for r in results]
        lines.append(
            f"| {row['group_size']} | {row['features']} | "
            + " | ".join(cell(values, f) for f in range(len(factors)))
            + " |"
        )
    lines += ["", "| transfer | " + " | ".join(factors) + " |", "|---|" + "---|" * len(factors)]
    for key in results[0]["transfer"]:
        values = [r["transfer"][key] for r in results]
        lines.append(f"| {key} | " + " | ".join(cell(values, f) for f in range(len(factors))) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1:]))
