"""Averaging metrics over batches without waiting on the device.

`MeanMetrics.add` only remembers each batch's values (tensors stay on their device, no operation is
launched: a training step pays a list append); `compute` stacks them, weights them by batch size
and turns the means into Python floats in one transfer, the one host sync, done on logging steps
and at the end of evaluation. A metric computed in float32 (or less) is reported as the float32
nearest its mean, in its shortest decimal (0.8888889, not 0.8888888955116272): the digits beyond
float32's are noise of the arithmetic, not of the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# Tensors of these types carry at most float32's precision: their means are reported at that precision.
SINGLE_PRECISION = (torch.float32, torch.float16, torch.bfloat16)


class MeanMetrics:
    """Batch-size-weighted means of the metric dicts returned by `train_batch` / `test_batch`."""

    def __init__(self) -> None:
        self.values: dict[str, list[tuple[Any, int]]] = {}  # name -> [(value, batch size), ...]
        self.count = 0
        self._single: dict[str, bool] = {}  # name -> every value a tensor of float32 or less
        self._reduced: dict[str, float] | None = None  # sums over ranks, after `reduce`

    def add(self, metrics: dict[str, Any], n: int) -> None:
        for name, value in metrics.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    continue  # images and histograms are not averaged
            elif not isinstance(value, (int, float)):
                continue
            self.values.setdefault(name, []).append((value, n))
            single = isinstance(value, torch.Tensor) and value.dtype in SINGLE_PRECISION
            self._single[name] = self._single.get(name, True) and single
        self.count += n

    def sums(self) -> dict[str, float]:
        """Each metric's batch-size-weighted sum, as floats (the host sync)."""
        if self._reduced is not None:
            return dict(self._reduced)
        result: dict[str, float] = {}
        tensor_sums: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, pairs in self.values.items():
                tensors = [(v, n) for v, n in pairs if isinstance(v, torch.Tensor)]
                result[name] = float(sum(v * n for v, n in pairs if not isinstance(v, torch.Tensor)))
                if tensors:
                    stacked = torch.stack([v if v.dim() == 0 else v.reshape(()) for v, _ in tensors]).to(torch.float64)
                    weights = torch.tensor([n for _, n in tensors], dtype=torch.float64, device=stacked.device)
                    tensor_sums[name] = (stacked * weights).sum()
            if tensor_sums:
                # One transfer for all tensor metrics instead of one `.item()` each.
                moved = torch.stack([s.to("cpu") for s in tensor_sums.values()]).tolist()
                for name, value in zip(tensor_sums, moved, strict=True):
                    result[name] += value
        return result

    def compute(self) -> dict[str, float]:
        if not self.count:
            return {}
        means = {name: value / self.count for name, value in self.sums().items()}
        return {name: single_precision(value) if self._single.get(name) else value for name, value in means.items()}

    def reduce(self, all_reduce: Any) -> None:
        """Sum counts and sums over distributed ranks with `all_reduce(tensor)` (in place).

        Every rank must hold the same metric names (each rank runs the same model).
        """
        sums = self.sums()
        names = sorted(sums)
        packed = torch.tensor([sums[name] for name in names] + [float(self.count)], dtype=torch.float64)
        all_reduce(packed)
        self._reduced = dict(zip(names, packed[:-1].tolist(), strict=True))
        self.count = int(packed[-1].item())


def single_precision(value: float) -> float:
    """`value` as the float32 nearest it, written in its shortest decimal (numpy's `str` of a float32
    is the shortest string that reads back as that float32): 0.8888888955116272 -> 0.8888889."""
    return float(str(np.float32(value)))


def benchmark_item(model: Any, metrics: dict[str, float]) -> tuple[str, float] | None:
    """The `(name, value)` of the model's benchmark metric among evaluation `metrics` (named
    `{split}.{metric}`), or None when they do not hold it."""
    name = model.benchmark_metric
    name = name() if callable(name) else name  # the original template made it a method
    return next(((k, v) for k, v in metrics.items() if k.split(".", 1)[-1] == name), None)
