"""Tiny trained runs and a direct call of an experiment's CLI, shared by the experiment tests."""

import argparse

from model import ModelConfig
from train import TrainConfig, train


def tiny_train(tmp_path_factory, model: str, dataset: str = "synthetic:200") -> str:
    cfg = TrainConfig(dataset=dataset, model=model, epochs=1, group_size=4, groups_per_step=5)
    model_cfg = ModelConfig(x_shape=(1, 28, 28), z_dim=2, beta_dim=2, K=3, hidden=16)
    return train(cfg, str(tmp_path_factory.mktemp("runs")), model_cfg, quiet=True)


def run_cli(module, *argv) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(list(argv)))
