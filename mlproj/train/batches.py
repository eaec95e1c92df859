"""Batches of any shape the loop meets: tensors, tuples/lists and dicts of them."""

from __future__ import annotations

from typing import Any

import torch


def to_device(batch: Any, device: torch.device, memory_format: torch.memory_format) -> Any:
    """`batch` on `device`, images (4-D tensors) in `memory_format`."""
    if isinstance(batch, torch.Tensor):
        # non_blocking: from pinned memory (loader_options pins on CUDA) the copy overlaps compute.
        if batch.dim() == 4:
            return batch.to(device, non_blocking=True, memory_format=memory_format)
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(item, device, memory_format) for item in batch)
    if isinstance(batch, dict):
        return {key: to_device(value, device, memory_format) for key, value in batch.items()}
    return batch


def batch_size(batch: Any) -> int:
    """The number of samples in `batch` (the first tensor's first dimension; 1 if it has none)."""
    first = batch[0] if isinstance(batch, (tuple, list)) else next(iter(batch.values())) if isinstance(batch, dict) else batch
    return int(first.shape[0]) if isinstance(first, torch.Tensor) else 1


def first_tensor(batch: Any) -> Any:
    """The inputs of an (inputs, labels) batch, or the batch itself."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch
