"""The set-generation experiment's table.md and its picture of donor sets next to what each generator made."""

from __future__ import annotations

import torch

from ...data import to_unit_float
from .generators import generators

SHOWN_PER_ROW = 8


def pair(values) -> str:
    return "-" if values is None else " / ".join(f"{v:.3f}" for v in values)


def markdown_tables(result: dict) -> str:
    rows, lines = result["rows"], []
    factors = [r for r in rows if r["kind"] == "factors"]
    if factors:
        names = " / ".join(result["factor_names"])
        lines += [
            f"Factors each image shows: R^2 ({names}) of the factors read from the generated sets, by readers fit on",
            "real images, on the run's reconstructions and on the generator's own sets of other held-out sets.",
            "",
            "| B | source | generator | real-image reader | reconstruction reader | own-set reader | novelty | "
            "diversity |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in factors:
            r2 = r["r2"]
            lines.append(
                f"| {r['group_size']} | {r['source']} | {r['generator']} | {pair(r2['real images'])} | "
                f"{pair(r2['reconstructions'])} | {pair(r2['own sets'])} | {r['novelty']:.2f} | {r['diversity']:.2f} |"
            )
        lines.append("")
    mix = [r for r in rows if r["kind"] == "mix"]
    if mix:
        alphas = list(dict.fromkeys(r["alpha"] for r in mix))
        lines += [
            "Class mix: total variation between the classes of the generated images (a classifier fit on real",
            "training images reads them) and the set's own class shares; lower is better. Novelty and diversity",
            "are means over the alphas.",
            "",
            "| B | source | generator | " + " | ".join(f"TV, alpha {a:g}" for a in alphas) + " | novelty | diversity |",
            "|---|---|---|" + "---|" * (len(alphas) + 2),
        ]
        keys = list(dict.fromkeys((r["group_size"], r["source"], r["generator"]) for r in mix))
        for key in keys:
            mine = {r["alpha"]: r for r in mix if (r["group_size"], r["source"], r["generator"]) == key}
            tv = " | ".join(f"{mine[a]['tv'][0]:.3f}" if a in mine else "-" for a in alphas)
            nov = sum(r["novelty"] for r in mine.values()) / len(mine)
            div = sum(r["diversity"] for r in mine.values()) / len(mine)
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {tv} | {nov:.2f} | {div:.2f} |")
        accuracy = result["diagnostics"].get("classifier accuracy", {})
        if accuracy:
            lines += ["", "Classifier accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()) + "."]
        lines.append("")
    return "\n".join(lines)


@torch.no_grad()
def save_sets_figure(path: str, sources, sets, device, kind: str):
    """Per shown set: a row of its members, then a row per (source, generator), then new real images."""
    import matplotlib.pyplot as plt

    from ..plotting import save_figure, show_grid

    x = to_unit_float(sets.members).to(device)
    made = [("donor set", x.cpu())]
    for label, run in sources:
        made += [(f"{label}: {name}", gen(x, SHOWN_PER_ROW).cpu()) for name, gen in generators(run).items()]
    made.append(("new real images", to_unit_float(sets.reference)))
    rows = [(f"set {s + 1}, {title}", images[s, :SHOWN_PER_ROW]) for s in range(len(x)) for title, images in made]
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.5 * SHOWN_PER_ROW + 3.5, 0.55 * len(rows) + 0.6))
    for ax, (title, images) in zip(axes, rows):
        show_grid(ax, images, SHOWN_PER_ROW)
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"set generation ({kind}): donor rows, then the images each generator made from them", fontsize=9)
    save_figure(fig, path)
