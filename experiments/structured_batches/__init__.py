"""Structured batches: does q(beta | X) tell the rule behind a group? (section 4.3, table 1, fig. 7)

The experiment (experiment.py): its tasks (tasks.py) and the classifiers that score the group
features of experiments/group_features.py on them (classifiers.py).
"""

from .experiment import StructuredBatchesSettings, report, structured_batches

__all__ = ["StructuredBatchesSettings", "report", "structured_batches"]
