"""Carving a validation set out of the training set, the same way in every run."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from .factory import DatasetFactory

# The split must not move when the run's seed changes, or runs would validate on different data.
SPLIT_SEED = 0


def split_indices(n: int, fraction: float) -> tuple[list[int], list[int]]:
    """(kept, carved) index lists: `fraction` of `range(n)` carved out by a fixed permutation."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    n_carved = int(round(n * fraction))
    return sorted(order[n_carved:]), sorted(order[:n_carved])


def train_validation(
    train: Dataset, fraction: float, eval_view: Dataset | None = None
) -> tuple[Dataset, Dataset | None]:
    """Split `train` into (train, validation); `eval_view` is the same data without augmentation."""
    if fraction <= 0:
        return train, None
    kept, carved = split_indices(len(train), fraction)
    return Subset(train, kept), Subset(eval_view if eval_view is not None else train, carved)


def loader_options(config: dict[str, Any]) -> dict[str, Any]:
    """The DatasetFactory keyword arguments that come from config."""
    device = str(config.get("device", "cpu"))
    return {
        "batch_size": config.get("batch_size", 64),
        "num_workers": config.get("num_workers", 0),
        "seed": config.get("seed", 0) or 0,
        "pin_memory": device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()),
    }


def sets_factory(config: dict[str, Any], train: Dataset, test: Dataset | None, input_shape: tuple[int, int, int],
                 num_classes: int, *, eval_view: Dataset | None = None) -> DatasetFactory:
    """The factory of a dataset given as map-style `train` and `test` sets (the torchvision path of
    each built-in dataset): validation carved from `train` by config `val_fraction`
    (`train_validation`; `eval_view` is `train` without augmentation), loaders as config says."""
    train, validation = train_validation(train, config.get("val_fraction", 0.1), eval_view=eval_view)
    return DatasetFactory(train_set=train, validation_set=validation, test_set=test, input_shape=input_shape,
                          num_classes=num_classes, **loader_options(config))
