"""p: the generative models. `model/` never imports `guide/`, `data/` or `train/`."""

from ..errors import ConfigError
from .base import Components, GenerativeModel
from .config import EXTENSIONS, ModelConfig
from .gmvae import GMVAEModel
from .mlvae import MLVAEModel
from .ugvae import UGVAEModel
from .vae import VAEModel

MODELS = {"ugvae": UGVAEModel, "vae": VAEModel, "gmvae": GMVAEModel, "mlvae": MLVAEModel}


def check_extensions(model_name: str, values: dict) -> None:
    """Refuse an extension of the paper set for a model that would ignore it.

    Parameters
    ----------
    model_name : str
        A model's registry name.
    values : dict
        Fields of :class:`ModelConfig` by name; those of ``EXTENSIONS`` (``cluster_weights``,
        ``decoder_film``) away from their defaults are checked against the model's ``extensions``.

    Raises
    ------
    ConfigError
        Naming each ignored field and the models that read it.
    """
    if model_name not in MODELS:
        return  # an unknown name is refused where the model is built, with the choices
    defaults = ModelConfig()
    ignored = [
        name
        for name in EXTENSIONS
        if name in values and values[name] != getattr(defaults, name) and name not in MODELS[model_name].extensions
    ]
    if ignored:
        readers = sorted(m for m, cls in MODELS.items() if set(ignored) <= cls.extensions)
        named = " and ".join(f"`{name}`" for name in ignored)
        it = "them" if len(ignored) > 1 else "it"
        raise ConfigError(
            f"{named} would be ignored by model {model_name}: only {', '.join(readers) or 'no model'} reads {it}; "
            f"drop {it} or set `model` to {readers[0] if readers else 'another model'}"
        )


__all__ = [
    "Components",
    "GenerativeModel",
    "ModelConfig",
    "UGVAEModel",
    "VAEModel",
    "GMVAEModel",
    "MLVAEModel",
    "MODELS",
    "check_extensions",
]
