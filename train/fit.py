"""Training from Python or the command line: `fit` starts a run, `resume` continues one.

    run = fit(dataset="mnist", epochs=50, z_dim=3)          # fields of TrainConfig and ModelConfig
    run = fit(TrainConfig(dataset="mnist"), ModelConfig(x_shape=(1, 28, 28), z_dim=3))
    run = fit(dataset="mnist", guide=MineGuide)             # a guide of your own (guide/registry.py)
    run = fit(train_data=x, test_data=x_test, epochs=50)   # in-memory images (data/tensors.py)
    run = resume("runs/mnist-ugvae-...", epochs=100)       # continue it, or extend it to 100 epochs
    run = resume("runs/tensors_...", train_data=x, test_data=x_test)  # a run of tensors takes them again

Both pick the driver from the launch options: none trains on one device (train/loop.py), a
LaunchConfig under PyTorch Lightning (train/lightning.py); a resumed run keeps its own unless
others are given. Both return the Run (trained/run.py), or None on the processes of a Lightning
run other than rank 0. Data, model and guide are built before the run directory is made, so bad
input leaves no run behind. The run's lock is held from the first write to the last, and
`on_finish(run)` runs inside it (the command line draws the run's figures there).

Under Lightning, `logger` (any Lightning logger, or a list) receives the numbers of metrics.csv;
a LightningDataModule cannot replace the run's data (train/lightning.py says why; in-memory
tensors can). A resume writes nothing before its checkpoint has loaded: config.json records a new total of
epochs, or the id a run made before run ids adopts from its checkpoint, only then. A run stopped
before its first checkpoint (checkpoints/ holds no file at all) trains from the start, in place.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, fields, replace

import pyro

from ..data import tensor_data
from ..data.tensors import names_tensors
from ..errors import ConfigError, RunError
from ..guide import build, guide_class
from ..guide.registry import registered_name
from ..model import ModelConfig, check_extensions
from ..trained.checkpoint import never_checkpointed
from ..trained.config import LaunchConfig, RunLocation, TrainConfig, check_memory, resolve_device
from ..trained.run import Run
from ..trained.threads import using_threads
from .loop import Trainer
from .session import check_image_shape, load_training_data, training_data

log = logging.getLogger(__name__)  # `logger` is the Lightning logger a user passes
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
MODEL_FIELDS = {f.name for f in fields(ModelConfig)}


def configs(train_cfg: TrainConfig | None, model_cfg: ModelConfig | None, values: dict):
    """(TrainConfig, ModelConfig or None, model fields) from configs and loose field values."""
    unknown = sorted(set(values) - TRAIN_FIELDS - MODEL_FIELDS)
    if unknown:
        raise ConfigError(f"{', '.join(f'`{k}`' for k in unknown)} is no field of TrainConfig or ModelConfig")
    if "guide" in values:  # a Guide subclass is registered, and the run records its name
        model = values.get("model", train_cfg.model if train_cfg else TrainConfig.model)
        values = {**values, "guide": registered_name(values["guide"], model)}
    train_values = {k: v for k, v in values.items() if k in TRAIN_FIELDS}
    model_values = {k: v for k, v in values.items() if k in MODEL_FIELDS}
    train_cfg = replace(train_cfg, **train_values) if train_cfg else TrainConfig(**train_values)
    if model_cfg is not None and model_values:
        model_cfg = replace(model_cfg, **model_values)
    return train_cfg, model_cfg, model_values


def prepare(
    train_cfg: TrainConfig | None = None,
    model_cfg: ModelConfig | None = None,
    *,
    train_data=None,
    test_data=None,
    **values,
):
    """A new run before its first step: (Run, TrainingData, model, guide); nothing is written yet.

    `values` are fields of TrainConfig and ModelConfig; model sizes without `x_shape` take the
    data's image shape. `train_data` (and `test_data`) are in-memory images, which the run's
    `dataset` then names as tensors:HASH (data/tensors.py).
    """
    train_cfg, model_cfg, model_values = configs(train_cfg, model_cfg, values)
    guide_class(train_cfg.model, train_cfg.guide)  # an unknown guide is refused before any data is read
    check_extensions(train_cfg.model, asdict(model_cfg) if model_cfg is not None else model_values)
    device = resolve_device(train_cfg.device)
    if model_cfg is not None:
        check_memory(model_cfg, train_cfg, device)  # a model too large is refused before any data is read
    pyro.clear_param_store()  # the param store is global: names left by an earlier model would shadow
    pyro.set_rng_seed(train_cfg.seed)
    if train_data is None:
        data = load_training_data(train_cfg, test_data=test_data)
    else:
        named = train_cfg.dataset
        if "dataset" in values or not (named == TrainConfig.dataset or names_tensors(named)):
            raise ConfigError(f"`train_data` and `dataset` {named} both say what to train on; drop one")
        tensors = tensor_data(train_data, test_data, train_cfg.image_size)
        train_cfg = replace(train_cfg, dataset=tensors.name)
        data = training_data(train_cfg, tensors.train, tensors.test)
    if model_cfg is None:
        # Sizes without an image shape take the data's.
        model_cfg = ModelConfig(**{"x_shape": tuple(data.train_set.x_shape), **model_values})
        check_memory(model_cfg, train_cfg, device)
    check_image_shape(data, model_cfg, train_cfg.dataset if train_data is None else "`train_data`")
    run = Run(model_cfg, train_cfg, device=device)
    model, guide = build(model_cfg, run.model_name, run.guide_name)
    return run, data, model, guide


def new_trainer(train_cfg: TrainConfig | None = None, model_cfg: ModelConfig | None = None, **values) -> Trainer:
    """A single-device Trainer of a new run, on the run's device (`values` as `prepare` takes
    them); `start` makes its directory."""
    run, data, model, guide = prepare(train_cfg, model_cfg, **values)
    return Trainer(run, data, model, guide, run.device)


def fit(
    train_cfg: TrainConfig | None = None,
    model_cfg: ModelConfig | None = None,
    *,
    run_dir: str | None = None,
    runs_dir: str = "runs",
    launch: LaunchConfig | None = None,
    on_finish=None,
    lightning_callbacks=(),
    logger=None,
    train_data=None,
    test_data=None,
    **values,
) -> Run | None:
    """Train a new run and return it.

    Data, model and guide are built and checked before the run directory is made, so bad input
    leaves no run behind. The run's lock is held from the first write to the last.

    Parameters
    ----------
    train_cfg : TrainConfig, optional
        How to train; ``values`` override its fields. Default: ``TrainConfig()``.
    model_cfg : ModelConfig, optional
        Sizes of the model; ``values`` override its fields. Default: ``ModelConfig`` with the
        image shape of the data (``x_shape`` is the data's, never a choice).
    run_dir : str, optional
        The run's directory, which must not exist. Default: a fresh
        ``runs_dir/<dataset>-<model>-<time>``; an existing run is never overwritten.
    runs_dir : str, default "runs"
        Where the fresh directory goes when ``run_dir`` is not given.
    launch : LaunchConfig, optional
        Train under PyTorch Lightning (``strategy="ddp"`` and its companions; needs the
        ``lightning`` extra). Default: one device, in this process.
    on_finish : callable, optional
        ``on_finish(run)`` is called at the end of training, inside the run's lock (the command
        line draws its figures there).
    lightning_callbacks : sequence, default ()
        Callbacks for Lightning's ``Trainer``; only with ``launch``.
    logger : Lightning logger or list of them, optional
        Loggers for Lightning's ``Trainer`` (CSVLogger, WandbLogger, ...); only with ``launch``.
        They get the numbers metrics.csv holds (:func:`ugvae.trained.metrics.logged_scalars`).
    train_data : tensor, array or ImageTensors, optional
        In-memory images instead of ``dataset``: uint8 or float in [0, 1], shaped (N, C, H, W),
        or :class:`ugvae.data.ImageTensors` with labels or groups. The run's ``dataset`` is then
        ``tensors:HASH``. Default: the images of ``dataset``.
    test_data : same as train_data, optional
        Held-out images for the test metrics. Default: a tenth of ``train_data``.
    **values
        Fields of :class:`TrainConfig` and :class:`ModelConfig` by name (``dataset="mnist"``,
        ``epochs=50``, ``z_dim=3``; bounds and defaults in their tables). ``guide`` is a guide's
        registry name or a subclass of :class:`ugvae.guide.Guide`, which is registered under its
        own name (:func:`ugvae.guide.register`). ``threads`` is the number of CPU threads torch
        computes with until ``fit`` returns (default: chosen for the machine).

    Returns
    -------
    Run or None
        The trained run, its weights loaded; None on the processes of a Lightning run other than
        rank 0.

    Raises
    ------
    ConfigError
        A field that is unknown, of the wrong type or out of bounds, a guide that does not exist,
        an extension that the model would ignore, or a model too large for the device. A Pyro
        AutoGuide is refused too: it is not amortised, so a run could not embed new groups (fit
        one against a trained run instead, see :doc:`/tutorials/writing-a-guide`).
    DataError
        A dataset that cannot be read, or whose images do not fit ``model_cfg``.
    RunError
        ``run_dir`` exists, or cannot be made.
    TrainingDiverged
        The ELBO or the weights became NaN; the message names the step and the checkpoint kept.
    TrainingInterrupted
        Ctrl-C or SIGTERM, after a checkpoint; resume the run with :func:`resume`.

    Examples
    --------
    >>> run = ugvae.fit(dataset="digits", epochs=2, group_size=16)  # doctest: +SKIP
    >>> run = ugvae.fit(TrainConfig(dataset="folder:my-sets", groups="labels:0"), z_dim=3)  # doctest: +SKIP
    """
    RunLocation(runs_dir, run_dir)  # checked before any data is read
    check_lightning_extras(launch, logger, values)
    threads = configs(train_cfg, model_cfg, values)[0].threads
    with using_threads(threads):
        if launch is not None:
            run, data, model, guide = prepare(
                train_cfg, model_cfg, train_data=train_data, test_data=test_data, **values
            )
            run.launch = launch
            return _fit_lightning(
                run, data, model, guide, None, runs_dir, run_dir, on_finish, lightning_callbacks, logger, threads
            )
        trainer = new_trainer(train_cfg, model_cfg, train_data=train_data, test_data=test_data, **values)
        run = trainer.start(runs_dir, run_dir)
        with run.lock(new=True):
            trainer.fit(on_finish)
    return run


def resume(
    run_dir: str | Run,
    *,
    epochs: int | None = None,
    device: str | None = None,
    threads: int | None = None,
    launch: LaunchConfig | None = None,
    on_finish=None,
    lightning_callbacks=(),
    logger=None,
    train_data=None,
    test_data=None,
) -> Run | None:
    """Continue a run from its newest good checkpoint, or extend a finished one, in its own directory.

    A resumed run on one process repeats the uninterrupted run exactly (its RNG, sampler and
    optimiser state are in the checkpoint). Nothing is written before the checkpoint has loaded.

    Parameters
    ----------
    run_dir : str or Run
        The run's directory, or a :class:`Run` just opened.
    epochs : int, optional
        Extend the run to this many epochs in all (config.json records the new total); at least
        the epochs already trained. Default: the run's own.
    device : str, optional
        Where this session trains (``cpu``, ``cuda``, ``cuda:N``, ``auto``); the run's config keeps
        its own. Default: the run's.
    launch : LaunchConfig, optional
        Lightning options that replace those the run was trained with. Default: the run's own.
    on_finish : callable, optional
        ``on_finish(run)`` at the end of training, inside the run's lock.
    threads : int, optional
        CPU threads torch computes with in this session. Default: the run's config.
    lightning_callbacks : sequence, default ()
        Callbacks for Lightning's ``Trainer``; only for a Lightning run.
    logger : Lightning logger or list of them, optional
        As in :func:`fit`; only for a Lightning run.
    train_data, test_data : optional
        The in-memory images of a run trained on tensors, checked against the hash it recorded.

    Returns
    -------
    Run or None
        The run, trained to its epochs; None on the processes of a Lightning run other than rank 0.

    Raises
    ------
    RunError
        Not a run directory, a corrupt config.json, no readable checkpoint, or another process
        writing into the run (:class:`~ugvae.errors.RunLocked`).
    ConfigError
        ``epochs`` fewer than those already trained.
    """
    run = run_dir if isinstance(run_dir, Run) else Run.open(run_dir)
    launch = launch or run.launch
    check_lightning_extras(launch, logger)
    writer = launch is None or launched_as_rank_zero()
    threads = run.train_cfg.threads if threads is None else threads
    with run.lock() if writer else contextlib.nullcontext(), using_threads(threads):
        if epochs is not None and epochs != run.train_cfg.epochs:
            run.train_cfg = replace(run.train_cfg, epochs=epochs)  # written to config.json once checked
        if launch is None:
            run.device = resolve_device(device or run.train_cfg.device)
            check_memory(run.model_cfg, run.train_cfg, run.device)
        fresh = never_checkpointed(run.run_dir)
        if fresh:  # the first weights of a new run: seeded as `prepare` seeds them
            pyro.clear_param_store()
            pyro.set_rng_seed(run.train_cfg.seed)
        data = load_training_data(run.train_cfg, train_data, test_data, run.run_dir)
        model, guide = build(run.model_cfg, run.model_name, run.guide_name)
        trainer = Trainer(run, data, model, guide, run.device) if launch is None else None
        checkpoint = None
        if not fresh:
            # The newest checkpoint that fits these modules and this data: an ill-fitting one is skipped.
            checkpoint = run.latest_checkpoint(model, guide, training=True, train_samples=len(data.train_set))
            if checkpoint is None:  # only files set aside as unreadable
                raise RunError(f"{run.run_dir} has no readable checkpoint to resume from; start a new run instead")
        if checkpoint is None:
            log.info(f"{run.run_dir} stopped before its first checkpoint: training it from the start")
        elif checkpoint.epoch > run.train_cfg.epochs:
            raise ConfigError(
                f"{run.run_dir} has already trained {checkpoint.epoch} epochs, more than `epochs` "
                f"{run.train_cfg.epochs}; pass at least {checkpoint.epoch}"
            )
        if writer and (run.adopt_id(checkpoint and checkpoint.run_id) or epochs is not None):
            run.save_config()  # the id the run takes from its checkpoints, or its new total of epochs
        if launch is not None:
            run.launch = launch
            return _fit_lightning(
                run, data, model, guide, checkpoint, None, None, on_finish, lightning_callbacks, logger, threads
            )
        if checkpoint is None:
            trainer.session.seed()
        else:
            trainer.restore(checkpoint)
        trainer.fit(on_finish)
    return run


def launched_as_rank_zero() -> bool:
    from .lightning import launched_as_rank_zero

    return launched_as_rank_zero()


def check_lightning_extras(launch: LaunchConfig | None, logger, values: dict | None = None) -> None:
    """A ConfigError for a Lightning logger without Lightning, or a LightningDataModule, before any work."""
    if "datamodule" in (values or {}):
        raise ConfigError(
            "a LightningDataModule cannot replace a run's data: UG-VAE trains on groups that its own samplers draw, "
            "with exact-resume state (train/lightning.py says why); pass its images as `train_data` instead"
        )
    if logger is not None and launch is None:
        raise ConfigError(
            "`logger` is a Lightning logger, which only the Lightning driver feeds: add `launch` "
            "(on one device: LaunchConfig(strategy='auto', devices=1))"
        )
    if logger is not None:
        from .lightning import as_loggers

        as_loggers(logger)


def _fit_lightning(
    run: Run, data, model, guide, checkpoint, runs_dir, run_dir, on_finish, callbacks, logger, threads
) -> Run | None:
    from .lightning import LightningUGVAE, fit_lightning, launched_as_rank_zero, lightning_trainer

    done = checkpoint.epoch if checkpoint else 0
    trainer = lightning_trainer(run, run.train_cfg.epochs - done, callbacks, logger)
    run.world_size = trainer.world_size
    module = LightningUGVAE(run, data, model, guide, checkpoint, threads)
    lock = contextlib.nullcontext()
    if launched_as_rank_zero():
        if run.run_dir is None:  # a new run (a resumed one, even from step 0, has its directory)
            run.claim(runs_dir, run_dir)
            lock = run.lock(new=True)
        else:
            run.save_config()  # the launch options and world size of this session
    with lock:
        if not fit_lightning(trainer, module):
            return None  # every process but rank 0 leaves the report to rank 0
        if on_finish:
            on_finish(run)
    return run
