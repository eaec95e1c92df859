"""Datasets: the `DatasetFactory`, the registry of named datasets, and the built-in ones.

Importing this package registers mnist, fashion_mnist, cifar10, cifar100, cluttered_mnist,
digits and image_folder without importing torch: torch and torchvision are imported when a dataset is built, and
`DatasetFactory`/`EpochSampler` on first use, so listing the datasets and checking their files
(`mlproj datasets`) takes a fraction of a second instead of torch's seconds of import.
"""

from importlib import import_module
from typing import Any

from . import cifar, cluttered, digits, image_folder, mnist  # noqa: F401  (registers the built-in datasets)
from .registry import (
    DatasetSpec,
    check_data_config,
    create_dataset_factory,
    dataset_names,
    dataset_shape,
    dataset_spec,
    prepare_dataset,
    register_dataset,
)

_LAZY = {"DatasetFactory": ".factory", "EpochSampler": ".factory"}  # they import torch


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DatasetFactory",
    "DatasetSpec",
    "EpochSampler",
    "check_data_config",
    "create_dataset_factory",
    "dataset_names",
    "dataset_shape",
    "dataset_spec",
    "prepare_dataset",
    "register_dataset",
]
