"""Where batches come from: datasets as uint8 ImageSets and the groups drawn from them.

imageset.py   ImageSet, the in-memory dataset every loader returns; memory checks, resizing
registry.py   DATASETS and load_dataset (names like folder:PATH, grouped:BASE, A+B)
mnist.py, fashion_mnist.py, digits.py, celeba.py, synthetic.py, folder.py, grouped.py
              one loader per dataset (folder.py also reads a folder of image sets as groups)
tensors.py    in-memory tensors as a run's data (`fit(train_data=...)`), named tensors:HASH
mixing.py     an A+B mixture of datasets, with the domain of each image
sampling.py   the groups a run trains and is tested on: training samplers, fixed test groups
experiment_groups.py   the groups experiments draw, by class rule or attribute
idx.py, download.py   IDX files and quiet torchvision downloads
"""

from ..errors import DataError
from .experiment_groups import STRUCTURED_RULES, attribute_groups, mixed_class_groups, rule_classes, structured_groups
from .folder import ImageGroups, consecutive, folder_groups
from .imageset import ImageSet, to_unit_float
from .registry import DATASETS, check_dataset_name, load_dataset
from .sampling import (
    ClusterGroups,
    MixedGroups,
    RandomGroups,
    Sampler,
    own_groups,
    parse_mix,
    parse_spec,
    seeded_partition,
    training_groups,
)
from .tensors import ImageTensors, TensorData, tensor_data

__all__ = [
    "DATASETS",
    "DataError",
    "ClusterGroups",
    "ImageGroups",
    "ImageSet",
    "ImageTensors",
    "MixedGroups",
    "RandomGroups",
    "STRUCTURED_RULES",
    "Sampler",
    "attribute_groups",
    "check_dataset_name",
    "consecutive",
    "seeded_partition",
    "folder_groups",
    "load_dataset",
    "mixed_class_groups",
    "own_groups",
    "parse_mix",
    "parse_spec",
    "rule_classes",
    "structured_groups",
    "TensorData",
    "tensor_data",
    "to_unit_float",
    "training_groups",
]
