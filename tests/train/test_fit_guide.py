"""`fit(guide=...)` takes a guide's name or a Guide subclass (train/fit.py, guide/registry.py): it
trains a guide of the user's with one warning, a guide of an installed entry point by name, and
refuses what it cannot train in one line before reading any data."""

import json
import warnings

import pytest
import torch
from pyro.infer.autoguide import AutoNormal

from tests.helpers import install_distribution
from ugvae.data import registry as data_registry
from ugvae.errors import ConfigError, UnknownName
from ugvae.guide import UGVAEGuide
from ugvae.model import ModelConfig
from ugvae.train import fit
from ugvae.trained import TrainConfig

TINY = dict(dataset="synthetic:40", epochs=1, group_size=8, z_dim=2, beta_dim=2, K=3, hidden=8)


class MeanPoolGuide(UGVAEGuide):
    """A guide of the user's (structured, under another name)."""


def config(run) -> dict:
    with open(run.path("config.json")) as f:
        return json.load(f)


def test_a_guide_class_trains_with_one_warning_and_its_run_records_where_it_came_from(
    tmp_path, guides_restored, one_thread
):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = fit(guide=MeanPoolGuide, runs_dir=str(tmp_path), **TINY)
    unproven = [w for w in caught if "is not proven" in str(w.message)]
    assert len(unproven) == 1 and "check_guide(MeanPoolGuide" in str(unproven[0].message)
    saved = config(run)
    assert saved["train"]["guide"] == saved["guide_name"] == "mean-pool"
    assert saved["guide_source"] == {"kind": "registered at run time", "defined_in": f"{__name__}:MeanPoolGuide"}
    assert type(run.guide) is MeanPoolGuide and run.step > 0


def test_a_shipped_guide_is_recorded_as_shipped(small_run):
    with open(f"{small_run}/config.json") as f:
        assert json.load(f)["guide_source"] == {"kind": "shipped"}


def test_a_guide_of_an_installed_entry_point_trains_by_name(tmp_path, monkeypatch, guides_restored, one_thread):
    site = tmp_path / "site"
    source = "from ugvae.guide import UGVAEGuide\n\nclass MineGuide(UGVAEGuide):\n    proven_sync_free = True\n"
    install_distribution(
        site, "mine-guides", "0.2", {"mine": "planted_fit_mine:MineGuide"}, {"planted_fit_mine": source}
    )
    monkeypatch.syspath_prepend(str(site))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # it declared itself proven: no warning
        run = fit(guide="mine", runs_dir=str(tmp_path / "runs"), **TINY)
    assert config(run)["guide_source"] == {
        "kind": "entry point",
        "distribution": "mine-guides",
        "version": "0.2",
        "defined_in": "planted_fit_mine:MineGuide",
    }
    assert type(run.guide).__name__ == "MineGuide"


@pytest.fixture
def no_data(monkeypatch):
    def read(*args, **kwargs):
        raise AssertionError("data was read before the guide was refused")

    monkeypatch.setattr(data_registry, "load_one", read)


@pytest.mark.parametrize(
    "guide, message",
    [
        (AutoNormal, "got the class pyro.infer.autoguide.guides.AutoNormal; a Pyro AutoGuide .* is not amortised"),
        (lambda model: AutoNormal(model), "got a value of type function; a Pyro AutoGuide"),
        ("exact", "guide 'exact' does not exist for model 'ugvae'; choose one of"),
    ],
    ids=["autoguide", "factory", "unknown name"],
)
def test_what_fit_cannot_train_is_refused_in_one_line_before_any_data_is_read(guide, message, tmp_path, no_data):
    with pytest.raises(ConfigError, match=message) as caught:
        fit(guide=guide, runs_dir=str(tmp_path), **TINY)
    assert "\n" not in str(caught.value) and not list(tmp_path.iterdir())


def test_a_guide_class_of_another_model_is_refused_by_its_model(tmp_path, no_data, guides_restored):
    with pytest.raises(ConfigError, match="MeanPoolGuide is a guide of model ugvae, not of vae: set `model` to ugvae"):
        fit(TrainConfig(model="vae"), guide=MeanPoolGuide, runs_dir=str(tmp_path))


def test_a_train_config_may_name_an_unknown_guide_but_a_run_of_it_is_refused(tmp_path, no_data):
    cfg = TrainConfig(guide="not-installed")  # config.json of a run whose guide is elsewhere stays readable
    with pytest.raises(UnknownName, match="'not-installed' does not exist"):
        fit(cfg, ModelConfig(x_shape=(1, 28, 28)), runs_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="is no guide name"):
        TrainConfig(guide="module:Class")


class DataInitGuide(UGVAEGuide):
    """Starts q(z | x)'s mean at a statistic of the data, read as a number in __init__, which the
    meta device of the memory check cannot give (issue 27)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        sample = torch.rand(64, *cfg.x_shape)  # stand-in for a sample of the training images
        self.offset = torch.nn.Parameter(torch.full((cfg.z_dim,), sample.mean().item()))

    def encode(self, x):
        h, z_loc, z_scale = super().encode(x)
        return h, z_loc + self.offset, z_scale


def test_a_guide_that_reads_data_in_init_trains(tmp_path, guides_restored, one_thread):
    with pytest.raises(RuntimeError, match="meta tensors"), torch.device("meta"):
        DataInitGuide(ModelConfig(x_shape=(1, 28, 28)))  # what the memory check used to meet
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run = fit(guide=DataInitGuide, runs_dir=str(tmp_path), **TINY)
    assert run.step > 0 and 0.3 < float(run.guide.offset.detach().mean()) < 0.7
