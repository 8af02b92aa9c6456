"""Datasets as uint8 ImageSets (torchvision, offline fallbacks, image folders, mixed domains) and samplers of groups."""

from ..errors import DataError
from .folder import ImageGroups, folder_groups
from .groups import MixedGroups, RandomGroups, fixed_groups
from .imageset import ImageSet, to_unit_float
from .registry import DATASETS, load_dataset
from .structured import STRUCTURED_RULES, attribute_groups, mixed_class_groups, rule_classes, structured_groups
from .training_groups import ClusterGroups, own_groups, training_groups

__all__ = [
    "DATASETS",
    "DataError",
    "ClusterGroups",
    "ImageGroups",
    "ImageSet",
    "MixedGroups",
    "RandomGroups",
    "STRUCTURED_RULES",
    "attribute_groups",
    "load_dataset",
    "own_groups",
    "mixed_class_groups",
    "rule_classes",
    "structured_groups",
    "fixed_groups",
    "folder_groups",
    "to_unit_float",
    "training_groups",
]
