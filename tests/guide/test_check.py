"""check_guide (guide/check.py) names each fault of a guide in one line: the four mistakes of
issue 27 seeded one at a time into the structured guide, and the others it knows."""

import dataclasses
import re
from contextlib import nullcontext

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from ugvae.errors import GuideContractError
from ugvae.guide import Guide, GuideReport, UGVAEGuide, check_guide


def structured(guide, x, *, z="z", plate_twice=False, enumerate_d=True, beta_in_samples=False, scale_d=1.0):
    """UGVAEGuide.forward (eq. 5-9), with one mistake switched on by name."""
    G, B = x.shape[:2]
    h, z_loc, z_scale = guide.encode(x)
    samples = pyro.plate("samples", B, dim=-1)
    with pyro.plate("groups", G, dim=-2):
        with samples:
            z_value = pyro.sample(z, dist.Normal(z_loc, z_scale).to_event(1))
        pi = guide.cluster_probs(h, z_value)
        loc, scale = guide.global_params(h, pi)
        with samples if beta_in_samples else nullcontext():
            pyro.sample("beta", dist.Normal(loc.unsqueeze(-2), scale.unsqueeze(-2)).to_event(1))
        scaled = poutine.scale(scale=scale_d) if scale_d != 1 else nullcontext()
        with pyro.plate("samples", B, dim=-1) if plate_twice else samples, scaled:
            pyro.sample("d", dist.Categorical(probs=pi), infer={"enumerate": "parallel"} if enumerate_d else {})


class WrongSiteName(UGVAEGuide):
    def forward(self, x):
        structured(self, x, z="z_i")


class PlateTwiceByName(UGVAEGuide):
    def forward(self, x):
        structured(self, x, plate_twice=True)


class SampledD(UGVAEGuide):
    def forward(self, x):
        structured(self, x, enumerate_d=False)


class WrongPosteriorShape(UGVAEGuide):
    def _global_posterior(self, x):
        loc, scale = super()._global_posterior(x)
        return loc.unsqueeze(1), scale.unsqueeze(1)  # (G, 1, beta_dim): one row per group was meant


SEEDED = [
    (WrongSiteName, r"samples 'z_i', which the model has not, and lacks the model's latent 'z': sample every"),
    (
        PlateTwiceByName,
        r"plate 'samples' is entered twice by name.*Multiple sample sites named 'samples'.*"
        r"samples = pyro\.plate\('samples', size, dim=-1\), and enter that object twice",
    ),
    (SampledD, r"guide site 'd' is sampled, not enumerated in parallel: give its pyro\.sample infer=\{'enumerate'"),
    (WrongPosteriorShape, r"global_posterior\(x\) for G = 2, B = 3: loc has shape \(2, 1, 3\), not \(2, 3\)"),
]


@pytest.mark.parametrize("guide_cls, line", SEEDED, ids=[cls.__name__ for cls, _ in SEEDED])
def test_each_seeded_mistake_is_one_line_naming_it_and_the_fix(guide_cls, line, tiny_cfg):
    with pytest.raises(GuideContractError) as caught:
        check_guide(guide_cls, tiny_cfg)
    (problem,) = caught.value.problems
    assert "\n" not in problem
    assert re.search(line, problem), problem
    assert str(caught.value).startswith(f"{guide_cls.__name__} breaks the guide contract (1 problem(s)):")


class BetaPerSample(UGVAEGuide):
    def forward(self, x):
        structured(self, x, beta_in_samples=True)


class UnusedNetwork(UGVAEGuide):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.extra = torch.nn.Linear(3, 3)  # built, never called: it would never train


class DBeforeBeta(UGVAEGuide):
    def forward(self, x):
        G, B = x.shape[:2]
        h, z_loc, z_scale = self.encode(x)
        samples = pyro.plate("samples", B, dim=-1)
        with pyro.plate("groups", G, dim=-2):
            with samples:
                z = pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
            pi = self.cluster_probs(h, z)
            with samples:
                pyro.sample("d", dist.Categorical(probs=pi), infer={"enumerate": "parallel"})
            loc, scale = self.global_params(h, pi)
            pyro.sample("beta", dist.Normal(loc.unsqueeze(-2), scale.unsqueeze(-2)).to_event(1))


class NoGlobalFact(UGVAEGuide):
    has_global_latent = False


class NoEvent(UGVAEGuide):
    def forward(self, x):
        G, B = x.shape[:2]
        h, z_loc, z_scale = self.encode(x)
        with pyro.plate("groups", G, dim=-2):
            z = pyro.sample("z", dist.Normal(z_loc, z_scale))  # (G, B, z_dim) outside `samples`, no event
            pi = self.cluster_probs(h, z)
            loc, scale = self.global_params(h, pi)
            pyro.sample("beta", dist.Normal(loc.unsqueeze(-2), scale.unsqueeze(-2)).to_event(1))
            with pyro.plate("samples", B, dim=-1):
                pyro.sample("d", dist.Categorical(probs=pi), infer={"enumerate": "parallel"})


class NotAGuide(torch.nn.Module):
    pass


OTHER_FAULTS = [
    (BetaPerSample, r"guide site 'beta' is in the plates groups \(dim -2\) and samples \(dim -1\).*outside `samples`"),
    (UnusedNetwork, r"'extra\.weight', 'extra\.bias' get no gradient from the ELBO"),
    (DBeforeBeta, r"Pyro warns about the pair: .*Expected site \"beta\" to precede sites \"d\""),
    (NoGlobalFact, r"NoGlobalFact\.has_global_latent is False, but the model samples site 'beta'"),
    (NoEvent, r"guide\(x\), x of shape .* raises ValueError: Shape mismatch inside plate\('groups'\).*\.to_event\(1\)"),
    (NotAGuide, r"NotAGuide is not a subclass of ugvae\.guide\.Guide"),
]


@pytest.mark.parametrize("guide_cls, line", OTHER_FAULTS, ids=[cls.__name__ for cls, _ in OTHER_FAULTS])
def test_other_faults_are_named_too(guide_cls, line, tiny_cfg):
    with pytest.raises(GuideContractError, match=line) as caught:
        check_guide(guide_cls, tiny_cfg)
    assert len(caught.value.problems) == 1


def test_a_latent_of_the_wrong_size_is_named_in_the_site_and_in_the_posterior(tiny_cfg):
    class WiderZ(UGVAEGuide):
        def __init__(self, cfg):
            super().__init__(dataclasses.replace(cfg, z_dim=cfg.z_dim + 1))

    with pytest.raises(GuideContractError) as caught:
        check_guide(WiderZ, tiny_cfg)
    site, posterior = caught.value.problems
    assert "guide site 'z' has batch shape (2, 3) and event shape (3,), the model's (2, 3) and (2,)" in site
    assert "local_posterior(x) for G = 2, B = 3: z_loc has shape (2, 3, 3), not (2, 3, 2)" in posterior


class NegativeScale(UGVAEGuide):
    def _local_posterior(self, x):
        z_loc, z_scale, pi = super()._local_posterior(x)
        return z_loc, -z_scale, pi


class UnnormalisedPi(UGVAEGuide):
    def _local_posterior(self, x):
        z_loc, z_scale, pi = super()._local_posterior(x)
        return z_loc, z_scale, 2 * pi


class PlainTuple(UGVAEGuide):
    def local_posterior(self, x):
        return tuple(self._local_posterior(x))


@pytest.mark.parametrize(
    "guide_cls, line",
    [
        (NegativeScale, r"local_posterior\(x\) for G = 2, B = 3: z_scale is not positive everywhere"),
        (UnnormalisedPi, r"local_posterior\(x\) for G = 2, B = 3: pi does not sum to one over its last dim"),
        (PlainTuple, r"local_posterior\(x\) returns a tuple, not a LocalPosterior"),
    ],
    ids=["negative scale", "unnormalised pi", "plain tuple"],
)
def test_posterior_faults_are_named(guide_cls, line, tiny_cfg):
    with pytest.raises(GuideContractError, match=line) as caught:
        check_guide(guide_cls, tiny_cfg)
    assert len(caught.value.problems) == 1


def test_a_guide_it_passes_gets_a_report_of_its_sites(tiny_cfg):
    report = check_guide(UGVAEGuide, tiny_cfg)
    assert isinstance(report, GuideReport) and report.sync_free_equal is None
    assert {name: (s.batch_shape, s.event_shape) for name, s in report.sites.items()} == {
        "z": ((2, 3), (tiny_cfg.z_dim,)),
        "beta": ((2, 1), (tiny_cfg.beta_dim,)),
        "d": ((2, 3), ()),
    }
    assert report.sites["d"].enumerate == "parallel" and "d: batch (2, 3), event (), plates groups, samples" in str(
        report
    )


def test_with_elbo_it_compares_the_sync_free_elbo_with_trace_enum_elbo(tiny_cfg):
    assert check_guide(UGVAEGuide, tiny_cfg, elbo=True).sync_free_equal is True

    class ScaledD(UGVAEGuide):  # a program TraceEnum_ELBO takes and the sync-free ELBO does not assemble
        def forward(self, x):
            structured(self, x, scale_d=0.5)

    assert check_guide(ScaledD, tiny_cfg).sync_free_equal is None
    with pytest.raises(GuideContractError, match="the sync-free ELBO cannot assemble the pair .* may not be scaled"):
        check_guide(ScaledD, tiny_cfg, elbo=True)


def test_a_guide_whose_init_fails_is_named(tiny_cfg):
    class Fails(Guide):
        def __init__(self, cfg):
            raise KeyError("hidden_sizes")

    with pytest.raises(GuideContractError, match=r"Fails\(model_cfg\) raises KeyError: 'hidden_sizes'"):
        check_guide(Fails, tiny_cfg, model="vae")


def test_checking_leaves_the_callers_random_stream_as_it_was(tiny_cfg):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check_guide(UGVAEGuide, tiny_cfg, elbo=True)
    assert torch.equal(torch.rand(3), expected)
