"""Structured batches: does q(beta | X) tell the rule behind a group? (section 4.3, table 1, fig. 7)

The experiment (experiment.py) over the group features it compares (features.py).
"""

from .experiment import StructuredBatchesSettings, report, structured_batches

__all__ = ["StructuredBatchesSettings", "report", "structured_batches"]
