"""Test ELBO, importance-weighted log-likelihood and clustering accuracy of a trained run.

IWAE bound (Burda et al., 2016) on log p(X) of each test group X, from S draws of the guide:

    log p(X) >= E log (1/S) sum_s w_s,   log w_s = log p(X, Z_s, beta_s) - log q(Z_s, beta_s | X)
    p(X, Z, beta)  = p(beta) prod_i p(x_i | z_i, beta) sum_k p(d_i = k) p(z_i | d_i = k, beta)
    q(Z, beta | X) = sum_d q(Z, d, beta | X) = q(Z | X) q(beta | X, Z)

d is summed exactly on both sides. In q it drops out because no continuous site of any guide
here depends on the value of d (beta reads pi(z), not d), so q(d | z) sums to one. This
d-marginal weight is the conditional expectation over d of the joint weight
p(X, Z, d, beta) / q(Z, d, beta | X), which keeps q(d | z): both give valid bounds for every
S, and by Jensen the marginal one is the tighter, with no Monte Carlo noise from d. At S = 1
it exceeds the training ELBO (eq. 10, the `test_elbo` here) by
sum_i E KL(q(d_i | z_i) || p(d_i | z_i, beta)).

A global latent couples the samples of a group, so the weight is one per group (`iwae_group`,
computed for every model). The VAE and the GMVAE factorise over samples: for them `iwae` sums
per-sample bounds (S draws of each z_i), which bound the same log p(X) more tightly for the
same S; for models with a global latent `iwae` is the group bound. Every number is per sample
in nats: a group's value divided by B, averaged over the test groups, with its standard error
over groups.

Clustering accuracy (Dilokthanakul et al.): each test sample goes to argmax_k q(d = k | z) at
z = E q(z | x), each cluster is mapped to the majority label of its members.

Beta diagnostics (train/diagnostics.py): KL(q(beta|X) || p(beta)) split into I(X; beta) and
marginal KL, active dims, spread of E[beta|X] across groups, and the decoder's pixel change per
posterior standard deviation of beta and of z; on the test groups above, or on the dataset's
own groups when it has them (grouped:BASE).
"""

from __future__ import annotations

import math
import os
import time

import pyro
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.poutine.util import site_is_subsample

from data import load_dataset, own_groups
from experiments.plotting import save_json
from train.diagnostics import beta_diagnostics
from train.loop import evaluate as elbo_and_usage
from train.loop import fixed_groups
from train.runs import RunError, check_compatible, default_guide, load_checkpoint, load_run

PARTICLE_DIM = -3  # left of the groups (-2) and samples (-1) plates; d is enumerated left of it


def log_weights(model, guide, x: torch.Tensor, particles: int):
    """Terms of log w for `particles` draws: per sample (S, G, B) and per group (S, G) or None."""
    with pyro.plate("iwae_particles", particles, dim=PARTICLE_DIM):
        # Enumerated guide sites (d) are summed out of q: hide them so the model enumerates its own.
        guide_trace = poutine.trace(
            poutine.block(guide, hide_fn=lambda msg: bool(msg["infer"].get("enumerate")))
        ).get_trace(x)
        enumerated_model = poutine.enum(config_enumerate(model), first_available_dim=PARTICLE_DIM - 1)
        model_trace = poutine.trace(poutine.replay(enumerated_model, trace=guide_trace)).get_trace(x)
    model_trace.compute_log_prob(), guide_trace.compute_log_prob()
    per_sample, per_group, enumerated = [], [], []
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            log_prob = sign * site["log_prob"]
            if log_prob.dim() > -PARTICLE_DIM:  # depends on the enumerated d
                enumerated.append(log_prob)
            elif any(f.name == "samples" for f in site["cond_indep_stack"]):
                per_sample.append(log_prob)
            else:
                per_group.append(log_prob.squeeze(-1))
    if enumerated:
        # each d_i is independent given (Z, beta): one sum over its K values per sample
        per_sample.append(sum(enumerated).logsumexp(0))
    return sum(per_sample), (sum(per_group) if per_group else None)


@torch.no_grad()
def iwae_bounds(model, guide, x: torch.Tensor, samples: int, particles_per_pass: int = 64):
    """(iwae, iwae_group, coupled): bounds (G,) on log p(X) of each group x (G, B, C, H, W).

    `coupled` says whether the model has per-group terms; if not, `iwae` is the sum of
    per-sample bounds, else it equals `iwae_group`.
    """
    chunks = [log_weights(model, guide, x, n) for n in _chunk_sizes(samples, particles_per_pass)]
    per_sample = torch.cat([c[0] for c in chunks])
    coupled = chunks[0][1] is not None
    group_weight = per_sample.sum(-1) + (torch.cat([c[1] for c in chunks]) if coupled else 0.0)
    iwae_group = group_weight.logsumexp(0) - math.log(samples)
    if coupled:
        return iwae_group, iwae_group, True
    return (per_sample.logsumexp(0) - math.log(samples)).sum(-1), iwae_group, False


def _chunk_sizes(total: int, size: int) -> list[int]:
    return [size] * (total // size) + ([total % size] if total % size else [])


def clustering_accuracy(clusters: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of samples whose cluster's majority label is their own label."""
    correct = sum(int(labels[clusters == k].bincount().max()) for k in clusters.unique())
    return correct / len(labels)


def mean_and_stderr(per_group: torch.Tensor) -> tuple[float, float]:
    n = per_group.numel()
    return per_group.mean().item(), (per_group.std().item() / math.sqrt(n)) if n > 1 else float("nan")


@torch.no_grad()
def evaluate_run(
    run_dir: str,
    samples: int = 100,
    device: str = "cpu",
    checkpoint: str | None = None,
    images_per_pass: int = 8192,
    seed: int = 0,
) -> dict:
    """Every number of the module docstring on the run's test split; written to RUN_DIR/eval.json
    (or eval-step-N.json for an explicit checkpoint)."""
    if samples < 1 or images_per_pass < 1:
        raise ValueError(f"--samples and --images-per-pass must be >= 1, got {samples} and {images_per_pass}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but CUDA is not available; use --device cpu")
    start = time.perf_counter()
    model, guide, config = load_run(run_dir, device)
    train_cfg, model_cfg = config["train"], config["model"]
    if checkpoint:
        ckpt = load_checkpoint(checkpoint, device)
        check_compatible(ckpt, model_cfg, train_cfg.model, train_cfg.guide or default_guide(train_cfg.model))
        model.load_state_dict(ckpt["model"]), guide.load_state_dict(ckpt["guide"])
        config["step"] = ckpt["step"]
    pyro.set_rng_seed(seed)
    test = load_dataset(train_cfg.dataset, "test", train_cfg.data_dir, train_cfg.image_size)
    groups = fixed_groups(len(test), train_cfg.group_size)
    images = test.images.to(device)
    result = elbo_and_usage(model, guide, images, groups)
    diagnostic_groups = own_groups(test, train_cfg.group_size)
    result.update(beta_diagnostics(model, guide, images, groups if diagnostic_groups is None else diagnostic_groups))
    model.eval(), guide.eval()  # elbo_and_usage leaves them in training mode
    B = train_cfg.group_size
    groups_per_pass = min(len(groups), max(1, images_per_pass // B))
    particles = max(1, images_per_pass // (B * groups_per_pass))
    iwae, iwae_group, clusters = [], [], []
    for idx in groups.split(groups_per_pass):
        x = images[idx.to(device)].float().div_(255)
        bound, group_bound, coupled = iwae_bounds(model, guide, x, samples, particles)
        iwae.append(bound.cpu() / B), iwae_group.append(group_bound.cpu() / B)
        pi = guide.local_posterior(x)[2]
        if pi is not None:
            clusters.append(pi.argmax(-1).flatten().cpu())
    iwae, iwae_group = torch.cat(iwae), torch.cat(iwae_group)
    (mean, se), (mean_group, se_group) = mean_and_stderr(iwae), mean_and_stderr(iwae_group)
    accuracy = None
    if clusters and test.labels is not None:
        accuracy = clustering_accuracy(torch.cat(clusters), test.labels[groups.flatten()])
    out = {
        "run_dir": run_dir,
        "step": config["step"],
        "model": train_cfg.model,
        "guide": train_cfg.guide or default_guide(train_cfg.model),
        "dataset": train_cfg.dataset,
        "group_size": B,
        "test_groups": len(groups),
        "samples": samples,
        "test_elbo": result.pop("test_elbo"),
        "iwae": mean,
        "iwae_se": se,
        "iwae_weights": "per group" if coupled else "per sample",
        "iwae_group": mean_group,
        "iwae_group_se": se_group,
        "iwae_per_test_group": [round(v, 4) for v in iwae.tolist()],  # for paired comparisons of runs
        "clustering_accuracy": accuracy,
        **result,
        "seconds": round(time.perf_counter() - start, 2),
    }
    name = f"eval-step-{config['step']:09d}.json" if checkpoint else "eval.json"
    save_json(os.path.join(run_dir, name), out)
    return out


def add_arguments(parser):
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--run", metavar="RUN_DIR", help="evaluate the run's newest checkpoint; writes RUN_DIR/eval.json"
    )
    which.add_argument(
        "--checkpoint", metavar="PATH", help="evaluate RUN_DIR/checkpoints/step-N.pt; writes RUN_DIR/eval-step-N.json"
    )
    parser.add_argument("--samples", type=int, default=100, help="S, importance samples per group of the IWAE bound")
    parser.add_argument(
        "--images-per-pass", type=int, default=8192, help="images decoded per forward pass; lower it if memory runs out"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")


def run(args) -> int:
    run_dir = args.run or os.path.dirname(os.path.dirname(os.path.abspath(args.checkpoint)))
    out = evaluate_run(run_dir, args.samples, args.device, args.checkpoint, args.images_per_pass, args.seed)
    print(
        f"{out['model']}/{out['guide']} on {out['dataset']}, step {out['step']}, "
        f"{out['test_groups']} test groups of {out['group_size']} (nats per sample):"
    )
    print(
        f"  test ELBO {out['test_elbo']:.2f}   IWAE (S={out['samples']}, {out['iwae_weights']}) "
        f"{out['iwae']:.2f} +- {out['iwae_se']:.2f}   IWAE per group {out['iwae_group']:.2f}"
    )
    if out["clustering_accuracy"] is not None:
        print(
            f"  clustering accuracy {out['clustering_accuracy']:.3f}, "
            f"{out['clusters_used']} clusters used (entropy {out['cluster_entropy']:.2f})"
        )
    if "beta_kl" in out:
        print(
            f"  beta: KL {out['beta_kl']:.2f} = I(X; beta) {out['beta_mi']:.2f} + marginal KL "
            f"{out['beta_marginal_kl']:.2f} nats per group, {out['beta_active_dims']} active dims, spread "
            f"{out['beta_spread']:.2f}; pixel change per posterior sd: beta {out['pixel_change_beta']:.4f}, "
            f"z {out['pixel_change_z']:.4f}"
        )
    return 0
