"""`DatasetFactory`: the train / validation / test datasets of an experiment and their loaders."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mlproj.errors import MLProjError


def epoch_seed(seed: int, epoch: int) -> int:
    """The one mix of the data seed and an epoch: each epoch's order (and augmentation) draws from it."""
    return seed * 1_000_003 + epoch

class EpochSampler(Sampler[int]):
    """Shuffles with a permutation drawn from `(seed, epoch)` alone.

    Any position of any epoch can be rebuilt without saved generator state: resuming mid-epoch sets
    `start` and the epoch continues with exactly the samples it would have seen. With `world_size > 1`
    each rank takes every `world_size`-th index of the shared permutation (its shard).
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw the permutation of `epoch` and skip its first `start` samples (of this rank)."""
        self.epoch, self.start = epoch, start

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=generator)
        else:
            order = torch.arange(self.n)
        if self.shuffle and self.world_size > 1:
            # DDP all-reduces gradients at every step, so every rank must take the same number of
            # steps: pad the permutation by wrapping around, as DistributedSampler does.
            order = torch.cat([order, order[: self._per_rank() * self.world_size - self.n]])
        return order[self.rank :: self.world_size][self.start :]

    def _per_rank(self) -> int:
        if self.shuffle and self.world_size > 1:
            return math.ceil(self.n / self.world_size)
        return math.ceil((self.n - self.rank) / self.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return max(0, self._per_rank() - self.start)


class DatasetFactory:
    """Holds the train, validation and test datasets and builds their DataLoaders on first use.

    Give datasets (loaders are then made with `batch_size`, a seeded `EpochSampler` for training),
    or ready loaders, or both. Validation and test sets are optional.

    Args:
        train_set, validation_set, test_set: map-style datasets yielding `(input, label)`.
        train_loader, validation_loader, test_loader: ready loaders; they win over the sets.
        batch_size: batch size of the loaders made here.
        num_workers: DataLoader worker processes.
        seed: seeds the training order; epoch `e` is the permutation of `(seed, e)`.
        input_shape, num_classes: what the data look like, for building a network.
    """

    def __init__(
        self,
        train_set: Dataset | None = None,
        train_loader: Any = None,
        test_set: Dataset | None = None,
        test_loader: Any = None,
        validation_set: Dataset | None = None,
        validation_loader: Any = None,
        *,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        input_shape: tuple[int, int, int] | None = None,
        num_classes: int | None = None,
    ):
        self._sets = {"train": train_set, "validation": validation_set, "test": test_set}
        self._loaders = {"train": train_loader, "validation": validation_loader, "test": test_loader}
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.pin_memory = pin_memory
        self.input_shape, self.num_classes = input_shape, num_classes
        self.rank, self.world_size = 0, 1
        self._sampler: EpochSampler | None = None

    def train_set(self) -> Dataset | None:
        return self._sets["train"]

    def validation_set(self) -> Dataset | None:
        return self._sets["validation"]

    def test_set(self) -> Dataset | None:
        return self._sets["test"]

    def has_validation_set(self) -> bool:
        return self._sets["validation"] is not None or self._loaders["validation"] is not None

    def has_test_set(self) -> bool:
        return self._sets["test"] is not None or self._loaders["test"] is not None

    def train_loader(self) -> Any:
        if self._loaders["train"] is None:
            train_set = self._sets["train"]
            if train_set is None:
                raise ValueError("This DatasetFactory has neither a train_set nor a train_loader.")
            self._sampler = EpochSampler(len(train_set), self.seed, rank=self.rank, world_size=self.world_size)
            self._loaders["train"] = self._make_loader(train_set, self._sampler)
        return self._loaders["train"]

    def validation_loader(self) -> Any:
        return self._eval_loader("validation")

    def test_loader(self) -> Any:
        return self._eval_loader("test")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> bool:
        """Point the train loader at `epoch`, skipping its first `start_batch` batches.

        Returns False when the loader came from outside and cannot skip by itself; the caller then
        skips by iterating.
        """
        self.train_loader()
        if self._sampler is None:
            return False
        self._sampler.set_epoch(epoch, start_batch * self.batch_size)
        return True

    def shard(self, rank: int, world_size: int) -> None:
        """Make this process read only its shard (distributed training); call before the first loader.

        Raises:
            MLProjError: when the train loader came ready-made: it cannot be sharded from here.
        """
        if world_size > 1 and self._loaders["train"] is not None:
            raise MLProjError(
                "this DatasetFactory was given a ready train_loader, which every torchrun process would read "
                "whole: give it train_set= instead (its loader is then sharded per process)."
            )
        self.rank, self.world_size = rank, world_size

    def _eval_loader(self, split: str) -> Any:
        if self._loaders[split] is None and self._sets[split] is not None:
            dataset = self._sets[split]
            # Every rank evaluates its own slice; the project averages the results over ranks.
            sampler = EpochSampler(len(dataset), self.seed, shuffle=False, rank=self.rank, world_size=self.world_size)
            self._loaders[split] = self._make_loader(dataset, sampler)
        return self._loaders[split]

    def _make_loader(self, dataset: Sized, sampler: Sampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            # Each `iter(loader)` draws the workers' base seed from this generator; without one it
            # would draw from torch's global RNG, so a run resumed mid-epoch (one extra `iter`)
            # would continue with a shifted global RNG (dropout masks, augmentations).
            generator=torch.Generator().manual_seed(self.seed),
        )
