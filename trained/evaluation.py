"""The numbers a run is judged by: test ELBO, IWAE log-likelihood, cluster usage and accuracy.

Test ELBO: eq. 10 per sample on the test split, d summed exactly (TraceEnum_ELBO). Training
reports it at every epoch end and `evaluate` at the end, on the same test groups: the test
split cut into fixed random groups of the run's B, and the images left over as one last,
smaller group (a global latent takes any group size; the other models factorise over samples).
Means are per sample, so each group weighs in proportion to its size.

IWAE bound (Burda et al., 2016) on log p(X) of each test group X, from S draws of the guide:

    log p(X) >= E log (1/S) sum_s w_s,   log w_s = log p(X, Z_s, beta_s) - log q(Z_s, beta_s | X)
    p(X, Z, beta)  = p(beta) prod_i p(x_i | z_i, beta) sum_k p(d_i = k) p(z_i | d_i = k, beta)
    q(Z, beta | X) = sum_d q(Z, d, beta | X) = q(Z | X) q(beta | X, Z)

d is summed exactly on both sides. In q it drops out because no continuous site of any guide
here depends on the value of d (beta reads pi(z), not d), so q(d | z) sums to one. This
d-marginal weight is the conditional expectation over d of the joint weight
p(X, Z, d, beta) / q(Z, d, beta | X), which keeps q(d | z): both give valid bounds for every
S, and by Jensen the marginal one is the tighter, with no Monte Carlo noise from d. At S = 1
it exceeds the test ELBO by sum_i E KL(q(d_i | z_i) || p(d_i | z_i, beta)).

A global latent couples the samples of a group, so the weight is one per group (`iwae_group`,
computed for every model). The VAE and the GMVAE factorise over samples: for them `iwae` sums
per-sample bounds (S draws of each z_i), which bound the same log p(X) more tightly for the
same S; for models with a global latent `iwae` is the group bound. Every number is per sample
in nats, with its standard error over groups.

Clustering accuracy (Dilokthanakul et al.): each test sample goes to argmax_k q(d = k | z) at
z = E q(z | x), each cluster is mapped to the majority label of its members. Cluster usage:
the entropy of the mean of q(d | z), and how many clusters hold >= 2% of it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.poutine.util import site_is_subsample

from ..data import load_dataset, own_groups, seeded_partition, to_unit_float
from ..data.imageset import resize_images, shape_text
from ..data.tensors import names_tensors, tensor_set
from ..errors import DataError
from ..progress import progress
from ..settings import Settings, seed_setting, setting
from .diagnostics import beta_diagnostics
from .environment import content_hashes, data_summary

PARTICLE_DIM = -3  # left of the groups (-2) and samples (-1) plates; d is enumerated left of it
USAGE_THRESHOLD = 0.02
TEST_SEED = 0
MAX_SAMPLES = 10**5
MAX_IMAGES_PER_PASS = 2**20
# A pass holds the log-weights of S samples of each of its images: at most this many floats (1 GiB).
MAX_LOG_WEIGHTS = 2**28


def test_partition(n: int, group_size: int) -> list[torch.Tensor]:
    """The test groups: a fixed random partition into (G, B) indices, and the images left over
    as one last group (1, n - G*B) when there are any."""
    groups = seeded_partition(n, group_size)
    left = torch.ones(n, dtype=torch.bool)
    left[groups.flatten()] = False
    rest = left.nonzero().squeeze(1)
    return [groups] + ([rest[None]] if len(rest) else [])


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


@torch.no_grad()
def test_metrics(model, guide, images: torch.Tensor, parts: list[torch.Tensor], chunk: int = 16) -> dict:
    """Per-sample test ELBO (nats) over index groups `parts` (each (G, B), B may differ between
    parts) of uint8 `images`, and cluster usage for mixture models. Keeps the modules' mode.

    Its draws of z and beta come from a private stream of fixed seed: the same weights always
    give the same number (the epoch's end in training and `evaluate` agree), and training's
    own random stream is left untouched."""
    modes = model.training, guide.training
    model.eval(), guide.eval()
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(TEST_SEED)
        out = _test_metrics(model, guide, images, parts, chunk)
    model.train(modes[0]), guide.train(modes[1])
    return out


def _test_metrics(model, guide, images, parts, chunk) -> dict:
    # A model without d has nothing to enumerate: TraceEnum_ELBO is Trace_ELBO then, as meant, not worth a warning.
    elbo, total, count, pis = TraceEnum_ELBO(max_plate_nesting=2, strict_enumeration_warning=False), 0.0, 0, []
    for groups in parts:
        for idx in groups.split(chunk):
            x = to_unit_float(images[idx.to(images.device)])
            total += elbo.loss(model, guide, x)
            count += idx.numel()
            pi = guide.local_posterior(x).pi  # None for a guide without clusters
            if pi is not None:
                pis.append(pi.reshape(-1, pi.shape[-1]).cpu())
    out = {"test_elbo": -total / count}
    if pis:
        out.update(cluster_usage(torch.cat(pis)))
    return out


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


@dataclass(frozen=True)
class EvaluateArguments(Settings):
    """What `Run.evaluate` computes with; the `evaluate` command adds which checkpoint."""

    samples: int = setting(100, "S, importance samples per group of the IWAE bound", at_least=1, at_most=MAX_SAMPLES)
    images_per_pass: int = setting(
        8192, "images decoded per forward pass; lower it if memory runs out", at_least=1, at_most=MAX_IMAGES_PER_PASS
    )
    seed: int = seed_setting("seed of the importance samples")
    data_dir: str | None = setting(None, "where the run's dataset is found", default_is="the run's own")

    def cross_field_problems(self) -> list[str]:
        if self.samples * self.images_per_pass > MAX_LOG_WEIGHTS:
            return [
                f"`samples` x `images_per_pass` must be at most {MAX_LOG_WEIGHTS} log-weights held at once, got "
                f"{self.samples} x {self.images_per_pass}; lower `images_per_pass`"
            ]
        return []


def test_split(run, data_dir: str | None = None, test_data=None):
    """The ImageSet `evaluate` reads: `test_data` (in-memory images, data/tensors.py) where given,
    else the test split of the run's dataset, read without downloading anything."""
    cfg = run.train_cfg
    if test_data is None and names_tensors(cfg.dataset):
        train, test = content_hashes(run.run_dir)
        given = (
            "ugvae.data.tensor_data(train_data).test, the tenth it held out"
            if train is not None and train == test
            else "the `test_data` it was trained with"
        )
        raise DataError(
            f"{run.run_dir} was trained on in-memory tensors ({cfg.dataset}), which no file holds; evaluate it "
            f"from Python with run.evaluate(test_data=...), passing {given} or other images"
        )
    if test_data is None:
        # Read-only: a run's config never makes this command download data or create folders.
        return load_dataset(cfg.dataset, "test", data_dir or cfg.data_dir, cfg.image_size, download=False)
    test = tensor_set(test_data, "test_data")
    if cfg.image_size is not None:
        test.images = resize_images(test.images, cfg.image_size)
    if test.x_shape != run.model_cfg.x_shape:
        raise DataError(
            f"`test_data` holds images of {shape_text(test.x_shape)}, but the model of {run.run_dir} takes "
            f"{shape_text(run.model_cfg.x_shape)}"
        )
    return test


@torch.no_grad()
def evaluate(
    run, samples: int = 100, seed: int = 0, images_per_pass: int = 8192, data_dir: str | None = None, test_data=None
) -> dict:
    """Every number of the module docstring, and the beta diagnostics (trained/diagnostics.py), for
    the weights loaded in `run` (a trained.run.Run) on its test split, or on `test_data`."""
    EvaluateArguments(samples, images_per_pass, seed, data_dir)
    start = time.perf_counter()
    model, guide, cfg, device = run.model, run.guide, run.train_cfg, run.device
    pyro.set_rng_seed(seed)
    test = test_split(run, data_dir, test_data)
    parts = test_partition(len(test), cfg.group_size)
    images = test.images.to(device)
    scores = test_metrics(model, guide, images, parts)
    diagnostic_groups = own_groups(test, cfg.group_size)
    diagnostics = beta_diagnostics(model, guide, images, parts[0] if diagnostic_groups is None else diagnostic_groups)
    B = cfg.group_size
    groups_per_pass = min(len(parts[0]), max(1, images_per_pass // B))
    particles = max(1, images_per_pass // (B * groups_per_pass))
    passes = list(parts[0].split(groups_per_pass)) + parts[1:]
    iwae, iwae_group, sizes, pis = [], [], [], []
    for idx in progress(passes, desc=f"IWAE, S={samples}", unit="pass"):
        x = to_unit_float(images[idx.to(device)])
        bound, group_bound, coupled = iwae_bounds(model, guide, x, samples, particles)
        size = idx.shape[1]
        iwae.append(bound.cpu() / size), iwae_group.append(group_bound.cpu() / size)
        sizes.append(torch.full((len(idx),), size))
        pi = guide.local_posterior(x).pi
        if pi is not None:
            pis.append(pi.reshape(-1, pi.shape[-1]).cpu())
    iwae, iwae_group, sizes = torch.cat(iwae), torch.cat(iwae_group), torch.cat(sizes)
    (mean, se), (mean_group, se_group) = mean_and_stderr(iwae, sizes), mean_and_stderr(iwae_group, sizes)
    order = torch.cat([p.flatten() for p in parts])  # the test images in the order of `pis`
    accuracy = None
    if pis and test.labels is not None:
        accuracy = clustering_accuracy(torch.cat(pis).argmax(-1), test.labels[order])
    return {
        "run_dir": run.run_dir,
        "run_id": run.run_id,
        "step": run.step,
        "model": run.model_name,
        "guide": run.guide_name,
        "dataset": cfg.dataset,
        "data": test.source
        if test_data is not None
        else data_summary(run.run_dir) or f"{test.source} ({len(test)} test)",
        "group_size": B,
        "test_groups": len(sizes),
        "test_images": len(order),
        "last_group_size": parts[1].shape[1] if len(parts) > 1 else None,
        "weighting": "per-sample means: each test group weighs by its size; the images left over "
        "from groups of B form one last, smaller group",
        "samples": samples,
        "test_elbo": scores["test_elbo"],
        "iwae": mean,
        "iwae_se": se,
        "iwae_weights": "per group" if coupled else "per sample",
        "iwae_group": mean_group,
        "iwae_group_se": se_group,
        "iwae_per_test_group": [round(v, 4) for v in iwae.tolist()],  # for paired comparisons of runs
        "clustering_accuracy": accuracy,
        **{k: v for k, v in scores.items() if k != "test_elbo"},
        **diagnostics,
        "seconds": round(time.perf_counter() - start, 2),
    }
