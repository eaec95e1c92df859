"""One canonical device for every spelling, with its index; the memory loader compares only those."""

from __future__ import annotations

import pytest
import torch

from mlproj.data.factory import EpochSampler
from mlproj.data.memory import BatchTransform, MemoryLoader, MemorySplit
from mlproj.util.device import canonical_device


@pytest.mark.parametrize(("spelling", "world_size", "local_rank", "expected"), [
    ("cuda", None, None, "cuda:0"),
    ("cuda:0", None, None, "cuda:0"),
    ("cuda:1", None, None, "cuda:1"),
    ("cuda", "1", "0", "cuda:0"),          # torchrun --nproc_per_node=1
    ("cuda", "2", "1", "cuda:1"),          # torchrun, the second process of a node
    ("cuda:0", "2", "1", "cuda:1"),        # under a job of several processes: this rank's GPU
    ("cpu", "2", "1", "cpu"),
    (torch.device("cuda"), None, None, "cuda:0"),
])
def test_canonical_device_every_cuda_spelling_has_this_process_index(monkeypatch: pytest.MonkeyPatch, spelling, world_size,
                                                                     local_rank, expected) -> None:
    for name, value in (("WORLD_SIZE", world_size), ("LOCAL_RANK", local_rank)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    device = canonical_device(spelling)
    assert device == torch.device(expected)
    assert device.index == torch.device(expected).index


def test_canonical_device_auto_is_cuda_0_or_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert canonical_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))


def test_memory_loader_cuda_spelling_equals_the_device_a_split_is_moved_to(monkeypatch: pytest.MonkeyPatch) -> None:
    # The crash of device=cuda: the split moved to cuda:0, the loader's device `cuda`, the two unequal,
    # and the loader pinning a GPU tensor. A tensor moved to `cuda` reports cuda:0: so must the loader.
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    split = MemorySplit(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4), BatchTransform((0.0,), (1.0,)))
    loader = MemoryLoader(split, EpochSampler(4, 0), 2, "cuda", augment=False)
    assert loader.device == torch.device("cuda", 0)
    assert loader.device.index == 0
