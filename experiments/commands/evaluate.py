"""The `evaluate` command: a run's test ELBO, IWAE log-likelihood, clustering and beta diagnostics.

The numbers are those of trained/evaluation.py (`Run.evaluate`), on the run's newest good
checkpoint or on one named checkpoint; they go to RUN/eval.json (eval-step-N.json for a named
checkpoint), written atomically under the run's lock, and to the console.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ...files import write_json
from ...progress import plural
from ...settings import setting
from ...trained import Run
from ...trained.evaluation import EvaluateArguments


@dataclass(frozen=True)
class EvaluateSettings(EvaluateArguments):
    """`Run.evaluate`'s arguments (trained/evaluation.py) and which checkpoint."""

    checkpoint: str | None = setting(
        None, "RUN/checkpoints/step-N.safetensors to evaluate", default_is="the newest good one"
    )


def evaluate_run(run: Run, settings: EvaluateSettings | None = None) -> dict:
    """Evaluate a run on its test split, and write the numbers to RUN/eval.json.

    The same numbers as :meth:`Run.evaluate` (test ELBO, IWAE bound with d summed exactly,
    clustering accuracy, cluster usage, beta diagnostics), on the run's newest good checkpoint or on
    ``settings.checkpoint`` (then to ``eval-step-N.json``), written atomically under the run's lock.

    Parameters
    ----------
    run : Run
        A trained run (:func:`ugvae.load_run`).
    settings : EvaluateSettings, optional
        Importance samples, seed, memory per pass, a checkpoint. Default: ``EvaluateSettings()``.

    Returns
    -------
    dict
        The numbers, with the run id and step they were computed at.

    Raises
    ------
    RunError
        Another process writes into the run, the run is read-only, or the checkpoint is not the run's.
    DataError
        The run's dataset cannot be read.
    """
    settings = settings or EvaluateSettings()
    # Held from the start: a run that cannot be written, or another writer (a process, a thread),
    # is refused before the evaluation, not after it. The command line holds it already.
    with run.lock():
        if settings.checkpoint:
            run.load_weights(run.read_checkpoint(settings.checkpoint))
        scores = run.evaluate(settings.samples, settings.seed, settings.images_per_pass, settings.data_dir)
        name = f"eval-step-{run.step:09d}.json" if settings.checkpoint else "eval.json"
        scores["written"] = run.path(name)
        write_json(scores["written"], scores)
    return scores


def report(scores: dict) -> str:
    """The console lines of an evaluation."""
    last = f" (the last of {scores['last_group_size']})" if scores["last_group_size"] else ""
    groups = f"{plural(scores['test_groups'], 'group')} of {scores['group_size']}{last}"
    lines = [
        f"data: {scores['data']}",
        f"{scores['model']}/{scores['guide']} on {scores['dataset']}, step {scores['step']}, "
        f"{scores['test_images']} test images in {groups} "
        "(nats per sample):",
        f"  test ELBO {scores['test_elbo']:.2f}   IWAE (S={scores['samples']}, {scores['iwae_weights']}) "
        f"{scores['iwae']:.2f} +- {scores['iwae_se']:.2f}"
        + (f"   IWAE per group {scores['iwae_group']:.2f}" if scores["iwae_weights"] == "per sample" else ""),
    ]
    if scores["clustering_accuracy"] is not None:
        lines.append(
            f"  clustering accuracy {scores['clustering_accuracy']:.3f}, "
            f"{scores['clusters_used']} clusters used (entropy {scores['cluster_entropy']:.2f})"
        )
    if "beta_kl" in scores:
        lines.append(
            f"  beta: KL {scores['beta_kl']:.2f} = I(X; beta) {scores['beta_mi']:.2f} + marginal KL "
            f"{scores['beta_marginal_kl']:.2f} nats per group, {scores['beta_active_dims']} active dims, spread "
            f"{scores['beta_spread']:.2f}; pixel change per posterior sd: beta {scores['pixel_change_beta']:.4f}, "
            f"z {scores['pixel_change_z']:.4f}"
        )
    lines.append(f"wrote {scores['written']}")
    return "\n".join(lines)


def run_dir_of(checkpoint: str) -> str:
    """RUN of RUN/checkpoints/step-N.safetensors."""
    return os.path.dirname(os.path.dirname(os.path.abspath(checkpoint)))
