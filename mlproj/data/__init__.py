"""Datasets: the `DatasetFactory`, the registry of named datasets, and the built-in ones.

Importing this package registers mnist, fashion_mnist, cifar10, cifar100, cluttered_mnist and
digits; torchvision itself is imported only when one of them is built.
"""

from . import cifar, cluttered, digits, mnist  # noqa: F401  (registers the built-in datasets)
from .factory import DatasetFactory, EpochSampler
from .registry import (
    DatasetSpec,
    create_dataset_factory,
    dataset_names,
    dataset_spec,
    prepare_dataset,
    register_dataset,
)

__all__ = [
    "DatasetFactory",
    "DatasetSpec",
    "EpochSampler",
    "create_dataset_factory",
    "dataset_names",
    "dataset_spec",
    "prepare_dataset",
    "register_dataset",
]
