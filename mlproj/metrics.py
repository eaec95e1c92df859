"""Averaging metrics over batches without waiting on the device.

`MeanMetrics.add` keeps running sums as tensors on the metric's device; only `compute` turns them
into Python floats, which is the one host sync, done on logging steps and at the end of evaluation.
"""

from __future__ import annotations

from typing import Any

import torch


class MeanMetrics:
    """Batch-size-weighted means of the metric dicts returned by `train_batch` / `test_batch`."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.count = 0

    def add(self, metrics: dict[str, Any], n: int) -> None:
        for name, value in metrics.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    continue  # images and histograms are not averaged
                value = value.detach().float().reshape(())
            elif not isinstance(value, (int, float)):
                continue
            self.sums[name] = self.sums[name] + value * n if name in self.sums else value * n
        self.count += n

    def compute(self) -> dict[str, float]:
        if not self.count:
            return {}
        tensors = [name for name, value in self.sums.items() if isinstance(value, torch.Tensor)]
        result = {name: float(value) / self.count for name, value in self.sums.items() if name not in tensors}
        if tensors:
            # One transfer for all tensor metrics instead of one `.item()` each.
            values = torch.stack([self.sums[name].to(torch.float64) for name in tensors]).cpu().tolist()
            result.update({name: value / self.count for name, value in zip(tensors, values, strict=True)})
        return result

    def reduce(self, all_reduce: Any) -> None:
        """Sum counts and sums over distributed ranks with `all_reduce(tensor)` (in place)."""
        names = sorted(self.sums)
        packed = torch.tensor([float(self.sums[name]) for name in names] + [float(self.count)], dtype=torch.float64)
        all_reduce(packed)
        self.sums = dict(zip(names, packed[:-1].tolist(), strict=True))
        self.count = int(packed[-1].item())
