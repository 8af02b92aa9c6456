"""Set-generation results over training seeds: `compare --experiment set-generation`.

From each run's newest results.json (experiment.py; every run is scored on the same held-out
sets) and its summary.json, grouped into settings (experiments/over_seeds.py), in cells of mean
± half-width of the 95% t-interval over seeds:

    class mix, per alpha   TV of beta sampling (bold) / the same run's set-code Gaussian, per B;
                           below, the reference setting's member code + noise, set's q(d) mix and
                           prior, and new real images: every baseline of the experiment
    novelty                of beta sampling per setting and B, and the reference's member code
    factors                R^2 per factor by the own-set reader (bold: beta sampling / set-code
                           Gaussian), and the same by the reader fit on real images
    test ELBO              per setting, its configuration against the reference and its ELBO cost
    targets                verdicts on the means over seeds:
                           class mix (alpha 0.3 and 1, B 8 and 32): beta sampling within 0.05 TV of
                             new real images, below the set-code Gaussian, novelty >= 0.9
                           factors: beta sampling no worse than the set-code Gaussian by more
                             than 0.02 R^2 on every factor, and better by 0.05 at B <= 4
                           test ELBO within 5 nats of the reference setting's
"""

from __future__ import annotations

from ..over_seeds import SeededRun, by_setting, check_reference, config_differences, fmt, mean, reference_setting

TARGET_GAP, TARGET_NOVELTY, TARGET_R2_SLACK, TARGET_R2_WIN, TARGET_ELBO = 0.05, 0.9, 0.02, 0.05, 5.0
REAL = "new real images"
PRIORS = ("beta ~ p(beta)", "z ~ p(z)")
BASELINES = ("member code + noise", "set's q(d) mix", "prior")


class Cells:
    """Every run's rows of its own generators and the real reference, by (setting, kind, B, alpha, generator)."""

    def __init__(self, runs: list[SeededRun]):
        self.settings = by_setting(runs)
        self.rows: dict[tuple, list[dict]] = {}
        for run in runs:
            for row in run.results["rows"]:
                if row["source"] not in ("this run", REAL):
                    continue  # baseline runs scored beside a run are runs of their own settings here
                generator = "prior" if row["generator"] in PRIORS else row["generator"]
                key = (run.setting, row["kind"], row["group_size"], row["alpha"], generator)
                self.rows.setdefault(key, []).append(row)

    def get(self, setting, kind, B, alpha, generator) -> list[dict]:
        return self.rows.get((setting, kind, B, alpha, generator), [])

    def sizes(self, kind) -> list[int]:
        return sorted({k[2] for k in self.rows if k[1] == kind})

    def alphas(self) -> list[float]:
        return sorted({k[3] for k in self.rows if k[1] == "mix"})

    def of_kind(self, kind) -> list[str]:
        return [s for s in self.settings if any(k[0] == s and k[1] == kind for k in self.rows)]


def tv(rows) -> list[float]:
    return [r["tv"][0] for r in rows]


def r2(rows, reader: str, factor: int) -> list[float]:
    return [r["r2"][reader][factor] for r in rows if r["r2"][reader] is not None]


def header(sizes) -> list[str]:
    return ["| setting | seeds | " + " | ".join(f"B = {B}" for B in sizes) + " |", "|---|---|" + "---|" * len(sizes)]


def mix_table(cells: Cells, alpha: float, reference: str) -> list[str]:
    sizes = cells.sizes("mix")
    lines = [
        f"Class mix, alpha = {alpha:g}: TV (lower is better) of beta sampling (bold) / the same run's set-code "
        "Gaussian, mean ± 95% interval over seeds.",
        "",
        *header(sizes),
    ]
    for name in cells.of_kind("mix"):
        row = []
        for B in sizes:
            beta, gauss = (
                cells.get(name, "mix", B, alpha, "beta sampling"),
                cells.get(name, "mix", B, alpha, "set-code Gaussian"),
            )
            if beta:
                row.append(f"**{fmt(tv(beta))}** / {mean(tv(gauss)):.3f}" if gauss else f"**{fmt(tv(beta))}**")
            else:
                row.append(f"- / {fmt(tv(gauss))}")
        lines.append(f"| {name} | {len(cells.settings[name])} | " + " | ".join(row) + " |")
    for generator in BASELINES:
        values = [cells.get(reference, "mix", B, alpha, generator) for B in sizes]
        if any(values):
            lines.append(f"| {generator} ({reference}) | | " + " | ".join(fmt(tv(v)) for v in values) + " |")
    real = [tv(cells.get(reference, "mix", B, alpha, REAL)) for B in sizes]
    lines.append(f"| {REAL} | | " + " | ".join(f"{mean(v):.3f}" if v else "-" for v in real) + " |")
    return lines


def novelty_table(cells: Cells, kind: str, reference: str) -> list[str]:
    sizes = cells.sizes(kind)
    lines = [
        f"Novelty ({kind}): distance to the nearest member over a new real image's (near 0: copies), of beta "
        "sampling, mean over the alphas and seeds.",
        "",
        *header(sizes),
    ]
    alphas = cells.alphas() if kind == "mix" else [None]
    for name, generator in [(s, "beta sampling") for s in cells.of_kind(kind)] + [(reference, "member code + noise")]:
        per_B = [[r["novelty"] for a in alphas for r in cells.get(name, kind, B, a, generator)] for B in sizes]
        if any(per_B):
            label = name if generator == "beta sampling" else f"{generator} ({name})"
            seeds = len(cells.settings[name]) if generator == "beta sampling" else ""
            lines.append(f"| {label} | {seeds} | " + " | ".join(f"{mean(v):.2f}" if v else "-" for v in per_B) + " |")
    return lines


def factor_table(cells: Cells, reader: str, names: list[str], reference: str) -> list[str]:
    sizes = cells.sizes("factors")

    def values(rows) -> str:
        return ", ".join(fmt(r2(rows, reader, f), 2) for f in range(len(names))) if rows else "-"

    def means(rows) -> str:
        return ", ".join(f"{mean(r2(rows, reader, f)):.2f}" for f in range(len(names))) if rows else "-"

    lines = [
        f"Factors, R^2 of {', '.join(names)} by the reader fit on {reader} (higher is better): beta sampling "
        "(bold) / the same run's set-code Gaussian, mean ± 95% interval over seeds.",
        "",
        *header(sizes),
    ]
    for name in cells.of_kind("factors"):
        row = []
        for B in sizes:
            beta = cells.get(name, "factors", B, None, "beta sampling")
            gauss = cells.get(name, "factors", B, None, "set-code Gaussian")
            row.append(f"**{values(beta)}** / {means(gauss)}" if beta else f"- / {values(gauss)}")
        lines.append(f"| {name} | {len(cells.settings[name])} | " + " | ".join(row) + " |")
    for generator in (*BASELINES, REAL):
        rows = [cells.get(reference, "factors", B, None, generator) for B in sizes]
        if any(rows) and all(r2(r, reader, 0) for r in rows if r):
            label = generator if generator == REAL else f"{generator} ({reference})"
            lines.append(f"| {label} | | " + " | ".join(values(r) for r in rows) + " |")
    return lines


def test_elbo(runs: list[SeededRun]) -> list[float]:
    return [r.summary.get("test_elbo") for r in runs if isinstance(r.summary.get("test_elbo"), (int, float))]


def elbo_table(cells: Cells, forced: str | None) -> list[str]:
    lines = [
        "Test ELBO (nats per sample on the run's test groups; higher is better) and the cost of each setting "
        "(its reference's minus its own), with what it changes against the reference.",
        "",
        "| setting | seeds | test ELBO | cost | against the reference |",
        "|---|---|---|---|---|",
    ]
    names = list(cells.settings)
    for name in names:
        ref = reference_setting(names, name, forced)
        runs, ref_runs = cells.settings[name], cells.settings[ref]
        cost = "-"
        if ref != name and test_elbo(runs) and test_elbo(ref_runs):
            cost = f"{mean(test_elbo(ref_runs)) - mean(test_elbo(runs)):+.2f} ({ref})"
        changes = config_differences(runs[0], ref_runs[0])
        lines.append(f"| {name} | {len(runs)} | {fmt(test_elbo(runs), 2)} | {cost} | {changes} |")
    return lines


def targets(cells: Cells, forced: str | None) -> list[str]:
    lines = ["Targets (on means over seeds):", ""]
    for name in cells.of_kind("mix"):
        verdicts = []
        for alpha in (0.3, 1.0):
            for B in (8, 32):
                beta, gauss, real = (
                    cells.get(name, "mix", B, alpha, g) for g in ("beta sampling", "set-code Gaussian", REAL)
                )
                if not (beta and gauss and real):
                    continue
                b, g, r = mean(tv(beta)), mean(tv(gauss)), mean(tv(real))
                novelty = mean(x["novelty"] for x in beta)
                met = b - r <= TARGET_GAP and b < g and novelty >= TARGET_NOVELTY
                verdicts.append(
                    f"alpha {alpha:g} B {B}: {'met' if met else 'MISSED'} (gap to real {b - r:+.3f}, vs set-code "
                    f"{b - g:+.3f}, novelty {novelty:.2f})"
                )
        if verdicts:
            lines.append(f"- {name}, class mix: " + "; ".join(verdicts))
    for name in cells.of_kind("factors"):
        verdicts = []
        for B in cells.sizes("factors"):
            beta, gauss = (
                cells.get(name, "factors", B, None, "beta sampling"),
                cells.get(name, "factors", B, None, "set-code Gaussian"),
            )
            if not (beta and gauss):
                continue
            factors = range(len(beta[0]["r2"]["own sets"]))
            diff = [mean(r2(beta, "own sets", f)) - mean(r2(gauss, "own sets", f)) for f in factors]
            met = min(diff) >= -TARGET_R2_SLACK and (B > 4 or min(diff) >= TARGET_R2_WIN)
            verdicts.append(
                f"B {B}: {'met' if met else 'MISSED'} (beta - set-code {' / '.join(f'{d:+.3f}' for d in diff)})"
            )
        if verdicts:
            lines.append(f"- {name}, factors (own-set reader): " + "; ".join(verdicts))
    names = list(cells.settings)
    for name in names:
        ref = reference_setting(names, name, forced)
        runs, ref_runs = test_elbo(cells.settings[name]), test_elbo(cells.settings[ref])
        if ref != name and runs and ref_runs:
            cost = mean(ref_runs) - mean(runs)
            verdict = "met" if cost <= TARGET_ELBO else "MISSED"
            lines.append(f"- {name}, test ELBO within {TARGET_ELBO:g} nats of {ref}: {verdict} ({cost:+.2f})")
    return lines


def seed_tables(runs: list[SeededRun], reference: str | None = None) -> str:
    """Every table of the module docstring, as Markdown."""
    cells = Cells(runs)
    check_reference(list(cells.settings), reference)
    lines: list[str] = []
    mix, factors = cells.of_kind("mix"), cells.of_kind("factors")
    if mix:
        mix_ref = reference_setting(mix, mix[0], reference)
        for alpha in cells.alphas():
            lines += mix_table(cells, alpha, mix_ref) + [""]
        lines += novelty_table(cells, "mix", mix_ref) + [""]
    if factors:
        names = runs[0].results.get("factor_names", ["angle", "gain"])
        factor_ref = reference_setting(factors, factors[0], reference)
        for reader in ("own sets", "real images"):
            lines += factor_table(cells, reader, names, factor_ref) + [""]
        lines += novelty_table(cells, "factors", factor_ref) + [""]
    lines += elbo_table(cells, reference) + [""] + targets(cells, reference)
    return "\n".join(lines) + "\n"
