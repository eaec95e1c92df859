"""MeanMetrics: batch-size-weighted means, tensors and floats alike, summed over ranks by reduce."""

from __future__ import annotations

import pytest
import torch

from mlproj.train.metrics import MeanMetrics


def test_mean_metrics_weights_by_batch_size_and_mixes_floats_and_tensors() -> None:
    meter = MeanMetrics()
    meter.add({"loss": torch.tensor(1.0), "accuracy": 0.5, "images": torch.zeros(2, 3)}, 3)
    meter.add({"loss": torch.tensor(3.0, dtype=torch.bfloat16), "accuracy": 1.0}, 1)
    assert meter.compute() == pytest.approx({"loss": 1.5, "accuracy": 0.625})


def test_mean_metrics_empty_computes_nothing() -> None:
    assert MeanMetrics().compute() == {}


def test_mean_metrics_reduce_sums_counts_and_values_over_ranks() -> None:
    meter = MeanMetrics()
    meter.add({"loss": torch.tensor(2.0)}, 4)

    def two_identical_ranks(tensor: torch.Tensor) -> None:
        tensor.mul_(2)  # what all_reduce(SUM) gives when a second rank holds the same sums

    meter.reduce(two_identical_ranks)
    assert meter.count == 8
    assert meter.compute() == pytest.approx({"loss": 2.0})


def test_mean_metrics_float32_metric_is_its_float32_in_shortest_digits_float64_kept_whole() -> None:
    meter = MeanMetrics()
    meter.add({"accuracy": torch.tensor(8 / 9), "exact": torch.tensor(8 / 9, dtype=torch.float64), "python": 8 / 9}, 9)
    means = meter.compute()
    assert repr(means["accuracy"]) == "0.8888889"  # torch.tensor(8 / 9).item() is 0.8888888955116272
    assert means["accuracy"] == pytest.approx(torch.tensor(8 / 9).item(), rel=1e-7)
    assert means["exact"] == means["python"] == 8 / 9
