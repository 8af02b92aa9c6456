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
in nats: a group's value divided by its size, averaged over the test groups, with its
standard error over groups.

Every test image counts: the test split is cut into fixed random groups of the run's B and
the images left over form one last, smaller group (a global latent takes any group size,
and the other models factorise over samples). Means are per sample, so each group weighs in
proportion to its size; eval.json says so under `weighting` and gives `last_group_size`.

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

from ..data import fixed_groups, load_dataset, own_groups, to_unit_float
from ..guide import default_guide
from ..train import load_run
from ..train.checkpoints import check_compatible, load_checkpoint
from ..train.config import resolve_device
from ..train.diagnostics import beta_diagnostics
from ..train.lock import run_lock
from ..train.metrics import cluster_usage, test_metrics
from ..train.rundir import load_config
from .plotting import save_json

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


def mean_and_stderr(per_group: torch.Tensor, sizes: torch.Tensor | None = None) -> tuple[float, float]:
    """Mean and its standard error over groups; with `sizes`, each group weighs by its size
    (a per-sample mean; the ratio estimator's standard error)."""
    n = per_group.numel()
    if sizes is None:
        return per_group.mean().item(), (per_group.std().item() / math.sqrt(n)) if n > 1 else float("nan")
    w = sizes.to(per_group.dtype)
    mean = (w * per_group).sum() / w.sum()
    if n < 2:
        return mean.item(), float("nan")
    se = torch.sqrt(n / (n - 1) * (w**2 * (per_group - mean) ** 2).sum()) / w.sum()
    return mean.item(), se.item()


def test_partition(n: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fixed test groups (G, B) of training, and the indices they leave over (or None)."""
    groups = fixed_groups(n, group_size)
    left = torch.ones(n, dtype=torch.bool)
    left[groups.flatten()] = False
    rest = left.nonzero().squeeze(1)
    return groups, (rest if len(rest) else None)


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
    device = str(resolve_device(device))
    start = time.perf_counter()
    # An explicit checkpoint is checked first: refused, it is the one thing to say.
    ckpt = load_checkpoint(checkpoint, device, run_id=load_config(run_dir)[2].get("run_id")) if checkpoint else None
    model, guide, config = load_run(run_dir, device)
    train_cfg, model_cfg = config.train_cfg, config.model_cfg
    if checkpoint:
        check_compatible(ckpt, model_cfg, train_cfg.model, train_cfg.guide or default_guide(train_cfg.model))
        model.load_state_dict(ckpt["model"]), guide.load_state_dict(ckpt["guide"])
        config.step = ckpt["step"]
    pyro.set_rng_seed(seed)
    test = load_dataset(train_cfg.dataset, "test", train_cfg.data_dir, train_cfg.image_size)
    groups, rest = test_partition(len(test), train_cfg.group_size)
    images = test.images.to(device)
    parts = [groups] + ([rest[None]] if rest is not None else [])
    elbos = [test_metrics(model, guide, images, part)["test_elbo"] for part in parts]
    model.eval(), guide.eval()  # test_metrics leaves them in training mode
    diagnostic_groups = own_groups(test, train_cfg.group_size)
    diagnostics = beta_diagnostics(model, guide, images, groups if diagnostic_groups is None else diagnostic_groups)
    B = train_cfg.group_size
    groups_per_pass = min(len(groups), max(1, images_per_pass // B))
    particles = max(1, images_per_pass // (B * groups_per_pass))
    iwae, iwae_group, sizes, pis = [], [], [], []
    passes = list(groups.split(groups_per_pass)) + ([rest[None]] if rest is not None else [])
    for idx in passes:
        x = to_unit_float(images[idx.to(device)])
        bound, group_bound, coupled = iwae_bounds(model, guide, x, samples, particles)
        size = idx.shape[1]
        iwae.append(bound.cpu() / size), iwae_group.append(group_bound.cpu() / size)
        sizes.append(torch.full((len(idx),), size))
        if guide.has_mixture:
            pi = guide.local_posterior(x).pi
            pis.append(pi.reshape(-1, pi.shape[-1]).cpu())
    iwae, iwae_group, sizes = torch.cat(iwae), torch.cat(iwae_group), torch.cat(sizes)
    (mean, se), (mean_group, se_group) = mean_and_stderr(iwae, sizes), mean_and_stderr(iwae_group, sizes)
    order = torch.cat([p.flatten() for p in parts])  # the test images in the order of `pis`
    result = cluster_usage(torch.cat(pis)) if pis else {}
    accuracy = None
    if pis and test.labels is not None:
        accuracy = clustering_accuracy(torch.cat(pis).argmax(-1), test.labels[order])
    test_elbo = sum(e * p.numel() for e, p in zip(elbos, parts)) / len(order)
    out = {
        "run_dir": run_dir,
        "step": config.step,
        "model": train_cfg.model,
        "guide": train_cfg.guide or default_guide(train_cfg.model),
        "dataset": train_cfg.dataset,
        "group_size": B,
        "test_groups": len(sizes),
        "test_images": len(order),
        "last_group_size": None if rest is None else len(rest),
        "weighting": "per-sample means: each test group weighs by its size; the images left over "
        "from groups of B form one last, smaller group",
        "samples": samples,
        "test_elbo": test_elbo,
        "iwae": mean,
        "iwae_se": se,
        "iwae_weights": "per group" if coupled else "per sample",
        "iwae_group": mean_group,
        "iwae_group_se": se_group,
        "iwae_per_test_group": [round(v, 4) for v in iwae.tolist()],  # for paired comparisons of runs
        "clustering_accuracy": accuracy,
        **result,
        **diagnostics,
        "seconds": round(time.perf_counter() - start, 2),
    }
    name = f"eval-step-{config.step:09d}.json" if checkpoint else "eval.json"
    out["written"] = os.path.join(run_dir, name)
    with run_lock(run_dir):  # run.py holds it already; a caller of this function may not
        save_json(out["written"], out)
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
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda[:N]")


def run(args) -> int:
    run_dir = args.run or os.path.dirname(os.path.dirname(os.path.abspath(args.checkpoint)))
    out = evaluate_run(run_dir, args.samples, args.device, args.checkpoint, args.images_per_pass, args.seed)
    print(
        f"{out['model']}/{out['guide']} on {out['dataset']}, step {out['step']}, "
        f"{out['test_images']} test images in {out['test_groups']} groups of {out['group_size']}"
        + (f" (the last of {out['last_group_size']})" if out["last_group_size"] else "")
        + " (nats per sample):"
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
    print(f"wrote {out['written']}")
    return 0
