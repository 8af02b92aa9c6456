"""Figures, tables and codes from a trained run: the paper's experiments, evaluation, embedding
and sampling. Each command is a module; `experiments/cli.py` registers them with run.py."""
