"""Sets in, sets out: what a set's beta generates, against a set's codes, its members and new real sets.

The experiment (experiment.py) draws held-out sets (held_out_sets.py), generates from each with
the run's generators and its baselines' (generators.py), scores them with readers fit on real
images (scores.py, experiments/readers.py) and writes the tables and figures (tables.py);
over_seeds.py makes the tables over training seeds of `compare --experiment set-generation`.
"""

from .experiment import SetGenerationSettings, report, set_generation

__all__ = ["SetGenerationSettings", "report", "set_generation"]
