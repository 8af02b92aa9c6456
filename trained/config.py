"""How a run is trained (everything that is not a size of the model, see model/config.py), where
it goes, and how it is launched across processes.

Every field is declared once (settings.py): type, default, bounds or choices, and help, from
which the `train` command's flags are made. Every value is checked where it enters (flags,
Python, or config.json of a run): types, ranges, and finiteness, since a NaN or infinite rate
would otherwise be blamed on divergence steps later; every count has a maximum, so that a
mistyped one is refused in one line instead of overflowing or allocating until the process is
killed. Rules that tie fields together are `cross_field_problems`. `check_memory` then compares
the peak memory of a training step, counted from the networks the config builds, with what the
device has free. Messages name fields in backticks (`group_size`); the command line shows them
as flags.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..data.registry import DEFAULT_DATA_DIR, check_dataset_name
from ..data.sampling import parse_mix, parse_spec
from ..errors import ConfigError, UGVAEError
from ..guide.registry import ENTRY_POINT_GROUP, SHIPPED, check_guide_name, check_model, guide_class
from ..model import MODELS
from ..settings import Settings, from_json, same_setting, seed_setting, setting, shown
from .threads import DEFAULT_IS as THREADS_DEFAULT_IS
from .threads import MAX_THREADS

# Far above any run of the paper (200 epochs, B = 128, G = 16), far below any overflow.
MAX_EPOCHS = 10**6
MAX_GROUP_SIZE = 2**20
MAX_GROUPS_PER_STEP = 2**16
MAX_SAMPLES_PER_STEP = 2**24  # group_size x groups_per_step
MAX_STEPS = 2**31  # between logged losses or checkpoints
MAX_IMAGE_SIZE = 4096
EVALUATIONS = 20  # epoch ends evaluated in a run whose `eval_every` is left unset, at most (and the last)
DEVICE_NAMES = "auto (cuda when available, else cpu), cpu or cuda[:N]"
# The --help sections of `train`, in order: each field names its own.
DATA, MODEL, TRAINING, OUTPUT = "data", "model", "training", "output"
LEVERS = "levers of the objective (extensions of the paper, each off by default: then the loss is the ELBO)"
SCALING_OUT = "scaling out (PyTorch Lightning, optional extra)"
SECTIONS = (DATA, MODEL, TRAINING, LEVERS, OUTPUT, SCALING_OUT)


@dataclass(frozen=True)
class Levers(Settings):
    """The levers of the training objective, each off by default (then the loss is eq. 10's ELBO).

    :doc:`/howto/objective` says what each computes, what it bounds and when to use it; test
    ELBOs are always eq. 10's, whatever trained the run.
    """

    local_kl_weight: float = setting(1.0, "weight lambda on the KL of z and d (1: the ELBO)", above=0, section=LEVERS)
    leave_one_out: bool = setting(
        False, "UG-VAE: decode each sample with beta inferred from the other members of its group", section=LEVERS
    )
    set_mix_weight: float = setting(
        0.0,
        "UG-VAE with --cluster-weights global: weight gamma on KL(the group's mean q(d) || p(d | beta)), "
        "which pulls p(d | beta) to the group's mix (0: the ELBO)",
        at_least=0,
        section=LEVERS,
    )

    @property
    def on(self) -> list[str]:
        """The names of the levers that change the loss."""
        return [f.name for f in fields(Levers) if getattr(self, f.name) != f.default]


def guide_names() -> str:
    by_model: dict[str, list[str]] = {}
    for model, guide in SHIPPED:
        by_model.setdefault(model, []).append(guide)
    shipped = "; ".join(f"{model}: {', '.join(guides)}" for model, guides in by_model.items())
    return f"{shipped}; or a guide an installed package provides (entry-point group {ENTRY_POINT_GROUP})"


def check_device_name(name: str) -> None:
    """A ConfigError when `name` is a device name on no machine (what this one has: `resolve_device`)."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ConfigError(f"`device` must be a device name such as cpu, got {shown(name)}")
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"`device` {shown(name)} is not a device name; use cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"`device` {shown(name)} is not supported; use cpu or cuda[:N]")


@dataclass(frozen=True)
class TrainConfig(Levers):
    """How a run is trained: data, groups, optimisation, the levers of the objective, output.

    The fields of :class:`Levers` are kept flat here, so that config.json stays one flat object.
    Frozen, and checked when made (also by ``dataclasses.replace``): one
    :class:`~ugvae.errors.ConfigError` names every field of the wrong type or out of bounds, then
    every broken rule between fields (``group_size`` >= 2 for a model with beta, ``graph`` only
    on CUDA, levers only where they act).

    Examples
    --------
    >>> TrainConfig(dataset="folder:my-sets", groups="labels:0", epochs=50).group_size
    128
    """

    dataset: str = setting(
        "mnist",
        "mnist, fashion-mnist, digits, celeba, synthetic, folder:PATH, grouped:NAME (groups sharing "
        "hidden factors), or A+B for a mixture of two",
        rule=check_dataset_name,
        section=DATA,
    )
    model: str = setting("ugvae", "ugvae, vae, gmvae or mlvae", section=MODEL)
    guide: str | None = setting(
        None,
        f"variational family, by model: {guide_names()}",
        default_is="the model's first",
        rule=check_guide_name,
        section=MODEL,
    )
    epochs: int = setting(
        200,
        "passes over the training set (with --resume: the new total)",
        at_least=1,
        at_most=MAX_EPOCHS,
        section=TRAINING,
    )
    group_size: int = setting(
        128,
        "B: samples per group, sharing one global latent",
        "--group-size",
        "-B",
        at_least=1,
        at_most=MAX_GROUP_SIZE,
        section=TRAINING,
    )
    groups_per_step: int = setting(
        1,
        "G: independent groups per step, vectorised in one call",
        "--groups-per-step",
        "-G",
        at_least=1,
        at_most=MAX_GROUPS_PER_STEP,
        section=TRAINING,
    )
    lr: float = setting(1e-3, "Adam learning rate", above=0, section=TRAINING)
    seed: int = seed_setting("random seed", section=TRAINING)
    device: str = setting(
        "cpu",
        f"where training runs: {DEVICE_NAMES}; a resumed run keeps its own",
        command_line_default="auto",
        rule=check_device_name,
        section=TRAINING,
    )
    threads: int | None = setting(
        None,
        "CPU threads torch computes with (trained/threads.py); a resumed run keeps its own unless given",
        at_least=1,
        at_most=MAX_THREADS,
        default_is=THREADS_DEFAULT_IS,
        section=TRAINING,
    )
    jit: bool = setting(False, "use JitTraceEnum_ELBO (same loss, less overhead)", negatable=False, section=TRAINING)
    data_dir: str | None = setting(
        None, "where datasets are found or downloaded", default_is=DEFAULT_DATA_DIR, section=DATA
    )
    image_size: int | None = setting(
        None,
        "resize images to SIZE x SIZE",
        at_least=1,
        at_most=MAX_IMAGE_SIZE,
        default_is="the dataset's own",
        section=DATA,
    )
    mix: float | str = setting(
        0.5,
        "share of dataset A in each group of an A+B mixture, or beta:A for a share ~ Beta(A, A) per group",
        at_least=0,
        at_most=1,
        rule=parse_mix,
        section=DATA,
    )
    groups: str = setting(
        "random",
        "training groups: random, labels:ALPHA (class proportions ~ Dirichlet(ALPHA); 0: one class) "
        "or clusters:ALPHA (the same over the model's own clusters)",
        rule=parse_spec,
        section=DATA,
    )
    group_warmup: int = setting(
        0, "epochs of random groups before clusters:ALPHA", at_least=0, at_most=MAX_EPOCHS, section=DATA
    )
    # The only host-device syncs of a step.
    log_every: int = setting(10, "steps between logged losses", at_least=1, at_most=MAX_STEPS, section=TRAINING)
    eval_every: int | None = setting(
        None,
        "epochs between evaluated epoch ends (test metrics, beta diagnostics, a checkpoint); the last epoch "
        "is always evaluated",
        at_least=1,
        at_most=MAX_EPOCHS,
        default_is=f"EPOCHS / {EVALUATIONS} rounded up: {EVALUATIONS} evaluations in a run",
        section=TRAINING,
    )
    checkpoint_every: int = setting(
        1000,
        "steps between checkpoints (one is also written at each evaluated epoch's end)",
        at_least=1,
        at_most=MAX_STEPS,
        section=TRAINING,
    )
    keep_checkpoints: int = setting(3, "how many checkpoints to keep", at_least=1, at_most=1000, section=TRAINING)
    clip_norm: float | None = setting(
        None, "clip the gradient norm to this value", above=0, default_is="no clipping", section=TRAINING
    )
    # Pyro's and torch.distributions' argument checks read tensors on the host (syncs).
    validate: bool | None = setting(
        None,
        "Pyro's argument checks, which sync with the host every step",
        default_is="on, but off on CUDA",
        section=TRAINING,
    )
    graph: bool = setting(
        False,
        "replay the whole step as one CUDA graph (needs cuda, and validation off)",
        negatable=False,
        section=TRAINING,
    )

    def cross_field_problems(self) -> list[str]:
        # Whether the guide exists is asked where a run is made or opened (trained/run.py): opening
        # a run whose guide is missing says how to provide it, and reads no entry point before.
        problems = []
        try:
            check_model(self.model)
        except UGVAEError as e:
            problems.append(str(e))
        if self.group_size < 2 and self.model != "vae":
            problems.append(f"`group_size` must be >= 2 for a model with a global latent, got {self.group_size}")
        if self.group_size * self.groups_per_step > MAX_SAMPLES_PER_STEP:
            problems.append(
                f"`group_size` x `groups_per_step` must be at most {MAX_SAMPLES_PER_STEP} samples per step, "
                f"got {self.group_size} x {self.groups_per_step}"
            )
        return problems + self.graph_problems() + self.lever_problems()

    def graph_problems(self) -> list[str]:
        """A captured step needs CUDA and the sync-free ELBO without host syncs."""
        if not self.graph:
            return []
        problems = []
        if not (self.device.startswith("cuda") or self.device == "auto"):
            problems.append("`graph` needs a GPU, CUDA graphs exist only there: set `device` to cuda, or drop `graph`")
        if self.validate:
            problems.append("`graph` cannot capture Pyro's validation checks (host syncs): drop `validate`")
        if self.jit:
            problems.append("`graph` captures the sync-free ELBO, not the JIT one: drop `jit`")
        return problems

    def lever_problems(self) -> list[str]:
        """Levers act on UG-VAE's beta and p(d | beta), and live in the sync-free ELBO only."""
        problems = []
        on = self.on
        if self.model != "ugvae" and set(on) & {"leave_one_out", "set_mix_weight"}:
            problems.append(
                "`leave_one_out` and `set_mix_weight` act on UG-VAE's beta and p(d | beta), which model "
                f"{self.model} has not: set `model` to ugvae"
            )
        if self.jit and on:
            problems.append(f"{' and '.join(f'`{name}`' for name in on)} live in the sync-free ELBO: drop `jit`")
        return problems

    @property
    def evaluation_period(self) -> int:
        """Epochs between evaluated epoch ends: `eval_every`, or about EVALUATIONS in the run."""
        return self.eval_every or -(-self.epochs // EVALUATIONS)

    @property
    def levers(self) -> Levers:
        return Levers(**{f.name: getattr(self, f.name) for f in fields(Levers)})

    def validation_on(self, device_type: str) -> bool:
        """Whether training on `device_type` runs the argument checks: `validate`, or else off on CUDA."""
        return self.validate if self.validate is not None else device_type != "cuda"

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From config.json's `train` section; a field this version does not know is refused by
        name (it would otherwise be ignored, and the run not be the one the file describes)."""
        return from_json(cls, d, "the training config")


@dataclass(frozen=True)
class CommandThreads(Settings):
    """The CPU threads of a command that opens trained runs (evaluate, embed, sample, compare, the
    experiments): training's `threads`, declared once."""

    threads: int | None = same_setting(
        TrainConfig, "threads", help="CPU threads torch computes with (trained/threads.py)", section=None
    )


@dataclass(frozen=True)
class RunLocation(Settings):
    """Where a new run goes: `run_dir`, which must not exist, or a fresh directory under `runs_dir`."""

    runs_dir: str = setting("runs", "parent of the new run directory", section=OUTPUT)
    run_dir: str | None = setting(
        None,
        "the new run's directory, which must not exist",
        default_is="a new RUNS_DIR/DATASET-MODEL-TIME",
        section=OUTPUT,
    )


@dataclass(frozen=True)
class LaunchConfig(Settings):
    """How PyTorch Lightning spreads a run over processes (`strategy` and its companions)."""

    strategy: str = setting(
        "ddp",
        "train under PyTorch Lightning with this strategy: ddp (one process per device; also under "
        "torchrun or SLURM), ddp_spawn, auto",
        command_line_default=None,
        default_is="none: one device, without Lightning",
        section=SCALING_OUT,
    )
    devices: str | int = setting(
        "auto", "devices per node: a count, a list like 0,1, or auto", at_least=-1, at_most=2**16, section=SCALING_OUT
    )
    num_nodes: int = setting(1, "machines taking part in the run", at_least=1, at_most=2**16, section=SCALING_OUT)
    accelerator: str = setting("auto", "cpu, gpu or auto", section=SCALING_OUT)

    @classmethod
    def from_dict(cls, d: dict) -> LaunchConfig:
        """From config.json's `lightning` entry, which also records the world size it ran with."""
        return from_json(cls, d, "the launch config (`lightning`)", ignored=("world_size",))


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device called `name`, or a ConfigError naming what is wrong with the name or what
    this machine lacks.

    "auto" is cuda when a GPU is available, else cpu: the command line's default, so the same
    command runs on a laptop and on a GPU node.
    """
    name = str(name) if isinstance(name, torch.device) else name
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"`device` {name} was asked for but CUDA is not available here; set `device` to cpu")
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"`device` {name} was asked for but this machine has {count} CUDA device(s); "
                f"use cuda:0 to cuda:{count - 1}"
            )
    return device


def training_bytes(model_cfg, train_cfg: TrainConfig) -> tuple[int, int]:
    """(peak bytes of a training step, parameters) of `model_cfg` trained under `train_cfg`.

    The parameters are counted on the networks themselves (`parameter_count`): K x z_dim cluster
    networks, encoders, decoder. Each float32 parameter is held four times during a step: the
    weight, its gradient and Adam's two moments. The activations kept for the backward pass are
    estimated per sample (images in and out, the hidden layers, K enumerated components of z) and
    per group (K cluster networks on beta).
    """
    guide = guide_class(train_cfg.model, train_cfg.guide)
    parameters = parameter_count(MODELS[train_cfg.model], model_cfg) + parameter_count(guide, model_cfg)
    groups = train_cfg.groups_per_step
    samples = train_cfg.group_size * groups
    per_sample = 4 * model_cfg.x_dim + 4 * model_cfg.hidden + model_cfg.K * (4 * model_cfg.z_dim + 2)
    if model_cfg.resolved_arch == "conv":  # the feature maps of encoder and decoder, each conv + norm + relu
        per_sample += 6 * (32 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8 + 64 * 4 * 4 + 256)
    per_group = model_cfg.K * (2 * model_cfg.hidden + 4 * model_cfg.z_dim)
    return 4 * (4 * parameters + 2 * (samples * per_sample + groups * per_group)), parameters


def parameter_count(module_cls, model_cfg) -> int:
    """The parameters of `module_cls(model_cfg)`, built on the meta device, which allocates nothing.

    A guide of the user's may read values in `__init__` (a statistic of data, say), which the meta
    device cannot give: such a guide is built once on the CPU instead, outside the run's random
    stream. Parameters a module creates lazily, on its first input, are not counted.
    """
    try:
        with torch.device("meta"):
            module = module_cls(model_cfg)
    except Exception:
        if module_cls in (*MODELS.values(), *SHIPPED.values()):
            raise  # the shipped networks build on meta: a failure is a bug, not a reading guide
        with torch.device("cpu"), torch.random.fork_rng(devices=[]):
            module = module_cls(model_cfg)
    return sum(p.numel() for p in module.parameters() if not torch.nn.parameter.is_lazy(p))


def check_memory(model_cfg, train_cfg: TrainConfig, device: torch.device | str = "cpu"):
    """A ConfigError, before anything is allocated, when a training step of `model_cfg` needs
    more memory than `device` has free (see `training_bytes`); nothing where that is unknown."""
    from ..data.imageset import available_memory

    needed, parameters = training_bytes(model_cfg, train_cfg)
    device = torch.device(device)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = available_memory()
    if free is not None and needed > free:
        raise ConfigError(
            f"a training step of this model needs about {needed / 2**30:.1f} GiB ({parameters:,} parameters, "
            f"held with their gradients and Adam's two moments, and the activations of {train_cfg.group_size} x "
            f"{train_cfg.groups_per_step} samples) but {free / 2**30:.1f} GiB are free on {device}; lower `hidden`, "
            "`K`, `z_dim`, `group_size` or `groups_per_step`"
        )
