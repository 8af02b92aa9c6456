"""The `upgrade` command: convert a run's checkpoints of the older, pickled format (step-N.pt) to the current one, once.

Checkpoints of formats 1-3 were pickles, which no other command reads (a pickle can build any
object). `ugvae upgrade RUN_DIR ...` scans each within bounds before torch's weights-only loader
reads it, converts it, validates it like any checkpoint and writes checkpoints/step-N.safetensors;
the old file goes to RUN/pickled-checkpoints/, and one that fails is set aside as
step-N.pt.unreadable (trained/checkpoint/upgrade.py). A run made before run ids takes the id of
its checkpoints, or a new one, in config.json once a checkpoint is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ...progress import plural
from ...trained.checkpoint.upgrade import PUT_AWAY, Upgraded, upgrade_run


@dataclass
class UpgradeSettings:
    """No settings: each run's own config says what its checkpoints must fit."""


def upgrade_runs(run_dirs: list[str], settings: UpgradeSettings | None = None, device: str = "auto") -> list[Upgraded]:
    """Convert each run's pickled checkpoints of ugvae 0.2 and earlier to the current format, once.

    Each pickle's opcodes are scanned within bounds (nesting, container counts, int sizes, total
    size) before torch's weights-only loader sees it; the old files are kept in
    ``RUN/pickled-checkpoints/``. See :func:`ugvae.trained.upgrade_run`.

    Parameters
    ----------
    run_dirs : list of str
        Run directories, converted in order.
    settings : UpgradeSettings, optional
        Unused; the command's settings.
    device : str, default "auto"
        Unused: nothing is computed.

    Returns
    -------
    list
        What was converted in each run.

    Raises
    ------
    RunError
        A run that cannot be upgraded; a pickle that exceeds the scan's bounds is refused by name.
    """
    return [upgrade_run(run_dir) for run_dir in run_dirs]


def report(results: list[Upgraded]) -> str:
    """A line for each run: what was written, set aside and adopted."""
    lines = []
    for result in results:
        if not result.written and not result.refused:
            lines.append(f"{result.run_dir}: no checkpoint of the older format; nothing to do")
            continue
        line = f"{result.run_dir}: wrote {plural(len(result.written), 'checkpoint')} of the current format"
        if result.written:
            line += f"; the pickled files are in {os.path.join(result.run_dir, PUT_AWAY)}"
        if result.refused:
            line += f"; set aside {', '.join(name for name, _ in result.refused)} (named above)"
        if result.adopted_id:
            line += f"; the run's id is now {result.adopted_id}"
        lines.append(line)
    return "\n".join(lines)
