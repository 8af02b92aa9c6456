#!/usr/bin/env python
"""Set-generation results over training seeds: Markdown tables with 95% intervals, test ELBOs and the targets.

    python scripts/set_generation_summary.py [--reference NAME] RUN_DIR...

Runs are grouped into settings by their folder name without a trailing -sSEED (mix-loo-s1 ->
mix-loo). Each run's newest RUN/experiments/set-generation*/results.json is read (the same
held-out sets for all, as the experiment's seed fixes them) and its summary.json's test ELBO.
Cells are the mean over seeds ± the half-width of the 95% t-interval of that mean (n - 1
degrees of freedom; none for one seed). Settings are listed in the order given. The ELBO cost of
a setting is its test ELBO minus the reference setting's (--reference, default the first
setting whose name ends in "default" within the same prefix, e.g. mix-default for mix-loo).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re

import numpy as np
from scipy import stats

TARGET_GAP, TARGET_NOVELTY, TARGET_R2_SLACK, TARGET_R2_WIN, TARGET_ELBO = 0.05, 0.9, 0.02, 0.05, 5.0


def setting(run_dir: str) -> str:
    return re.sub(r"-s\d+$", "", os.path.basename(os.path.normpath(run_dir)))


def latest_results(run_dir: str) -> dict:
    found = glob.glob(os.path.join(run_dir, "experiments", "set-generation*", "results.json"))
    if not found:
        raise SystemExit(f"{run_dir} has no set-generation results; run `run.py experiment set-generation` on it")
    return json.load(open(max(found, key=os.path.getmtime)))


def test_elbo(run_dir: str) -> float:
    return json.load(open(os.path.join(run_dir, "summary.json")))["test_elbo"]


def interval(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (0 for one value)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), 0.0
    return float(values.mean()), float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def fmt(values, digits=3) -> str:
    mean, half = interval(values)
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if half else "")


class Runs:
    """Every run's rows, indexed by (setting, kind, B, alpha, source kind, generator)."""

    def __init__(self, run_dirs: list[str]):
        self.settings = list(dict.fromkeys(setting(r) for r in run_dirs))
        self.seeds = {s: [r for r in run_dirs if setting(r) == s] for s in self.settings}
        self.rows, self.elbo = {}, {s: [test_elbo(r) for r in self.seeds[s]] for s in self.settings}
        for r in run_dirs:
            for row in latest_results(r)["rows"]:
                source = "real" if row["source"] == "new real images" else "run"
                key = (setting(r), row["kind"], row["group_size"], row["alpha"], source, row["generator"])
                self.rows.setdefault(key, []).append(row)

    def get(self, name, kind, B, alpha, generator, source="run"):
        return self.rows.get((name, kind, B, alpha, source, generator), [])

    def sizes(self, kind):
        return sorted({k[2] for k in self.rows if k[1] == kind})

    def alphas(self):
        return sorted({k[3] for k in self.rows if k[1] == "mix"})

    def kind_settings(self, kind):
        return [s for s in self.settings if any(k[0] == s and k[1] == kind for k in self.rows)]


def tv(rows) -> str:
    return fmt([r["tv"][0] for r in rows]) if rows else "-"


def mix_table(runs: Runs, alpha: float) -> list[str]:
    gens = ["beta sampling", "set-code Gaussian", "member code + noise", "set's q(d) mix"]
    lines = [
        f"Class mix, alpha = {alpha:g}: TV (lower is better) / novelty of each generator, mean ± 95% interval "
        "over seeds.",
        "",
        "| setting | B | beta sampling | set-code Gaussian | member code + noise | set's q(d) mix | prior | new real |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in runs.kind_settings("mix"):
        for B in runs.sizes("mix"):
            cells = []
            for g in gens:
                rows = runs.get(name, "mix", B, alpha, g)
                cells.append(f"{tv(rows)} / {np.mean([r['novelty'] for r in rows]):.2f}" if rows else "-")
            prior = runs.get(name, "mix", B, alpha, "beta ~ p(beta)") or runs.get(name, "mix", B, alpha, "z ~ p(z)")
            real = runs.get(name, "mix", B, alpha, "new real images", "real")
            lines.append(f"| {name} | {B} | " + " | ".join(cells) + f" | {tv(prior)} | {tv(real)} |")
    return lines


def r2(rows, reader) -> str:
    if not rows or rows[0]["r2"][reader] is None:
        return "-"
    values = np.array([r["r2"][reader] for r in rows])
    return " / ".join(fmt(values[:, f], 2) for f in range(values.shape[1]))


def factor_table(runs: Runs) -> list[str]:
    lines = [
        "Factors (angle / gain): R^2 by the reader fit on each generator's own sets (own) and on real images (real),",
        "mean ± 95% interval over seeds; novelty of beta sampling.",
        "",
        "| setting | B | beta sampling, own | set-code Gaussian, own | member code + noise, own | beta sampling, real "
        "| set-code Gaussian, real | new real, own | novelty |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in runs.kind_settings("factors"):
        for B in runs.sizes("factors"):
            beta = runs.get(name, "factors", B, None, "beta sampling")
            gauss = runs.get(name, "factors", B, None, "set-code Gaussian")
            member = runs.get(name, "factors", B, None, "member code + noise")
            real = runs.get(name, "factors", B, None, "new real images", "real")
            novelty = f"{np.mean([r['novelty'] for r in beta]):.2f}" if beta else "-"
            lines.append(
                f"| {name} | {B} | {r2(beta, 'own sets')} | {r2(gauss, 'own sets')} | {r2(member, 'own sets')} | "
                f"{r2(beta, 'real images')} | {r2(gauss, 'real images')} | {r2(real, 'own sets')} | {novelty} |"
            )
    return lines


def reference_of(runs: Runs, name: str, forced: str | None) -> str | None:
    if forced:
        return forced
    prefix = name.split("-")[0]
    return next((s for s in runs.settings if s == f"{prefix}-default"), None)


def elbo_table(runs: Runs, forced: str | None) -> list[str]:
    lines = [
        "Test ELBO (nats per sample, random test groups of the run's B) and its cost against the setting without "
        "the lever.",
        "",
        "| setting | seeds | test ELBO | cost vs reference (reference - setting) |",
        "|---|---|---|---|",
    ]
    for name in runs.settings:
        ref = reference_of(runs, name, forced)
        cost = "-"
        if ref and ref != name:
            diff = np.mean(runs.elbo[ref]) - np.mean(runs.elbo[name])
            cost = f"{diff:+.2f} ({ref})"
        lines.append(f"| {name} | {len(runs.elbo[name])} | {fmt(runs.elbo[name], 2)} | {cost} |")
    return lines


def targets(runs: Runs, forced: str | None) -> list[str]:
    lines = ["Targets (on means over seeds):", ""]
    for name in runs.kind_settings("mix"):
        verdicts = []
        for alpha in (0.3, 1.0):
            for B in (8, 32):
                beta = runs.get(name, "mix", B, alpha, "beta sampling")
                gauss = runs.get(name, "mix", B, alpha, "set-code Gaussian")
                real = runs.get(name, "mix", B, alpha, "new real images", "real")
                if not (beta and gauss and real):
                    continue
                b, g, r = (np.mean([x["tv"][0] for x in rows]) for rows in (beta, gauss, real))
                nov = np.mean([x["novelty"] for x in beta])
                ok = b - r <= TARGET_GAP and b < g and nov >= TARGET_NOVELTY
                verdicts.append(
                    f"alpha {alpha:g} B {B}: {'met' if ok else 'MISSED'} (gap to real {b - r:+.3f}, vs set-code "
                    f"{b - g:+.3f}, novelty {nov:.2f})"
                )
        if verdicts:
            lines.append(f"- {name}, class mix: " + "; ".join(verdicts))
    for name in runs.kind_settings("factors"):
        verdicts = []
        for B in runs.sizes("factors"):
            beta = runs.get(name, "factors", B, None, "beta sampling")
            gauss = runs.get(name, "factors", B, None, "set-code Gaussian")
            if not (beta and gauss):
                continue
            diff = np.mean([r["r2"]["own sets"] for r in beta], 0) - np.mean([r["r2"]["own sets"] for r in gauss], 0)
            ok = diff.min() >= -TARGET_R2_SLACK and (B > 4 or diff.min() >= TARGET_R2_WIN)
            verdicts.append(
                f"B {B}: {'met' if ok else 'MISSED'} (beta - set-code {' / '.join(f'{d:+.3f}' for d in diff)})"
            )
        if verdicts:
            lines.append(f"- {name}, factors (own-set reader): " + "; ".join(verdicts))
    for name in runs.settings:
        ref = reference_of(runs, name, forced)
        if ref and ref != name:
            cost = np.mean(runs.elbo[ref]) - np.mean(runs.elbo[name])
            verdict = "met" if cost <= TARGET_ELBO else "MISSED"
            lines.append(f"- {name}, test ELBO within {TARGET_ELBO:g} nats of {ref}: {verdict} ({cost:+.2f})")
    return lines


def summary(run_dirs: list[str], forced: str | None = None) -> str:
    runs = Runs(run_dirs)
    lines = []
    for alpha in runs.alphas():
        lines += mix_table(runs, alpha) + [""]
    if runs.kind_settings("factors"):
        lines += factor_table(runs) + [""]
    lines += elbo_table(runs, forced) + [""] + targets(runs, forced)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--reference", default=None, help="the setting every ELBO cost is taken against")
    args = parser.parse_args()
    print(summary(args.runs, args.reference), end="")
