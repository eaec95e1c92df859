"""The in-memory data path: each split one uint8 tensor, batches cut by index, transforms batched.

torchvision's loaders build one PIL image per sample and run the transforms sample by sample, a few
thousand samples a second on a CPU core. Here a split is one uint8 tensor (on the training device
when it fits), a batch is one `index_select` of a seeded `EpochSampler` permutation, and
normalization, random crop with padding and horizontal flip run on the whole batch at once. The
samples and normalization are those of the torchvision path (`test_data_memory.py` checks it).

The augmentation draws come from a generator seeded by (seed, epoch, rank, batch), so a run resumed
mid-epoch sees exactly the crops and flips the uninterrupted run would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from mlproj.util.device import canonical_device

from .factory import DatasetFactory, EpochSampler, epoch_seed
from .splits import loader_options, split_indices

# Keep a split on the GPU only while it takes at most this share of the free memory.
GPU_SHARE = 0.25
# Splits read without augmentation are also kept normalized (float32) up to this size in all.
NORMALIZED_CACHE_BYTES = 2 * 2**30


def use_memory_backend(config: dict[str, Any]) -> bool:
    """Whether config `data_backend` asks for this path (the default)."""
    return config.get("data_backend", "memory") == "memory"


@dataclass
class BatchTransform:
    """uint8 (B, C, H, W) -> normalized float, with optional crop-with-padding and flip.

    Normalization is `x / scale`, then `(x - mean) / std` per channel: the same float operations as
    torchvision's `ToTensor()` + `Normalize(mean, std)`, so both paths give equal tensors.
    """

    mean: Sequence[float]
    std: Sequence[float]
    scale: float = 255.0
    crop_padding: int = 0
    flip: bool = False

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is not None and (self.crop_padding or self.flip):
            images = _random_crop_and_flip(images, self.crop_padding, self.flip, generator)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device).view(-1, 1, 1)
        return images.float().div_(self.scale).sub_(mean).div_(std)


def _random_crop_and_flip(images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding) (zero padding, in uint8) then RandomHorizontalFlip on
    every image of the batch, as one gather: a fixed number of operators whatever the batch size.

    The draws are made on the CPU from `generator` (the crop offsets as one (n, 2) tensor, then the
    flips as one (n,) tensor), so a resumed run redraws them exactly, on any device.
    """
    n, c, h, w = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator) if padding else torch.zeros(n, 2, dtype=torch.long)
    flipped = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    draws = torch.cat([offsets, flipped.long().unsqueeze(1)], dim=1).to(images.device, non_blocking=True)  # one copy
    padded = torch.nn.functional.pad(images, (padding,) * 4) if padding else images
    width = w + 2 * padding
    rows = draws[:, :1] + torch.arange(h, device=images.device)  # (n, h): source row of each output row
    columns = torch.arange(w, device=images.device)
    columns = draws[:, 1:2] + torch.where(draws[:, 2:3].bool(), w - 1 - columns, columns)  # (n, w), mirrored when flipped
    index = (rows.unsqueeze(2) * width + columns.unsqueeze(1)).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, index).view(n, c, h, w)


class MemorySplit(Dataset):
    """One split: uint8 images (N, C, H, W) and int64 labels, on one device.

    Indexing gives single normalized samples (as a torchvision dataset would); the loaders below
    never use it and cut whole batches instead.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: BatchTransform):
        if images.dim() == 3:
            images = images.unsqueeze(1)
        self.images, self.labels, self.transform = images, labels.long(), transform
        self.normalized: torch.Tensor | None = None  # see `keep_normalized`

    def keep_normalized(self) -> None:
        """Normalize the whole split once (by the same transform, so the values are identical):
        a batch read without augmentation is then one gather, like a hand-written loop's."""
        chunks = [self.transform(self.images[i : i + 4096]) for i in range(0, len(self), 4096)]
        self.normalized = torch.cat(chunks)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index : index + 1])[0], self.labels[index]

    def to(self, device: torch.device) -> MemorySplit:
        return MemorySplit(self.images.to(device), self.labels.to(device), self.transform)


class MemoryLoader:
    """Batches of a `MemorySplit` in the order of an `EpochSampler`, on `device`.

    Args:
        split: the data.
        sampler: the order (and this rank's shard); `set_epoch` on it moves the loader too.
        batch_size: samples per batch; the last batch may be smaller.
        device: where batches are delivered; a split kept elsewhere is copied per batch, as uint8.
        augment: apply the transform's random crop and flip (training only).
    """

    def __init__(self, split: MemorySplit, sampler: EpochSampler, batch_size: int, device: torch.device, augment: bool):
        self.split, self.sampler, self.batch_size = split, sampler, batch_size
        self.device, self.augment = canonical_device(device), augment

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s = self.sampler
        order = s.indices().to(self.split.images.device)
        first_batch = s.start // self.batch_size
        for i, start in enumerate(range(0, len(order), self.batch_size)):
            index = order[start : start + self.batch_size]
            labels = self.split.labels.index_select(0, index)
            if self.split.normalized is not None and not self.augment:
                yield self.split.normalized.index_select(0, index), labels  # on the device already
                continue
            images = self.split.images.index_select(0, index)
            if images.device != self.device:  # a tensor's device has its index, as the canonical one: `cuda` is `cuda:0` here
                if images.device.type == "cpu" and self.device.type == "cuda":  # copy the uint8 batch, 4x less than floats, without waiting
                    images, labels = images.pin_memory(), labels.pin_memory()
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
            generator = None
            if self.augment:
                key = (epoch_seed(s.seed, s.epoch) * 1_009 + s.rank) * 100_003 + first_batch + i
                generator = torch.Generator().manual_seed(key % 2**63)
            yield self.split.transform(images, generator), labels


class MemoryDatasetFactory(DatasetFactory):
    """A `DatasetFactory` whose loaders are `MemoryLoader`s; same interface, same samples.

    Args:
        train, validation, test: the splits (validation and test optional).
        device: the training device; splits move there when they fit.
        augment: random crop / flip the training batches (the transform says which).
        **options: `DatasetFactory` keyword arguments (batch_size, seed, input_shape, ...).
    """

    def __init__(
        self,
        train: MemorySplit,
        validation: MemorySplit | None = None,
        test: MemorySplit | None = None,
        *,
        device: str | torch.device = "cpu",
        augment: bool = False,
        **options: Any,
    ):
        options.pop("num_workers", None)  # nothing to parallelize: a batch is one gather
        options.pop("pin_memory", None)
        super().__init__(train_set=train, validation_set=validation, test_set=test, **options)
        self.device = canonical_device(device)
        self.augment = augment
        splits = [split for split in (train, validation, test) if split is not None]
        storage = _storage_device(self.device, sum(s.images.numel() + 8 * s.labels.numel() for s in splits))
        self._sets = {name: (split.to(storage) if split is not None else None) for name, split in self._sets.items()}
        # Splits that are never augmented are normalized once, when they sit on the training device
        # (the transform per batch is a few passes over memory; not worth repeating on a CPU).
        plain = [split for name, split in self._sets.items() if split is not None and (name != "train" or not augment)]
        if storage == self.device and sum(4 * s.images.numel() for s in plain) <= NORMALIZED_CACHE_BYTES:
            for split in plain:
                split.keep_normalized()

    def train_loader(self) -> MemoryLoader:
        if self._loaders["train"] is None:
            self._sampler = EpochSampler(len(self._sets["train"]), self.seed, rank=self.rank, world_size=self.world_size)
            self._loaders["train"] = MemoryLoader(self._sets["train"], self._sampler, self.batch_size, self.device, self.augment)
        return self._loaders["train"]

    def _eval_loader(self, split: str) -> MemoryLoader | None:
        if self._loaders[split] is None and self._sets[split] is not None:
            sampler = EpochSampler(len(self._sets[split]), self.seed, shuffle=False, rank=self.rank, world_size=self.world_size)
            self._loaders[split] = MemoryLoader(self._sets[split], sampler, self.batch_size, self.device, augment=False)
        return self._loaders[split]


def _storage_device(device: torch.device, n_bytes: int) -> torch.device:
    if device.type != "cuda":
        return torch.device("cpu")
    free, _ = torch.cuda.mem_get_info(device)
    return device if n_bytes <= GPU_SHARE * free else torch.device("cpu")


def memory_factory(
    config: dict[str, Any],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor] | None,
    transform: BatchTransform,
    input_shape: tuple[int, int, int],
    num_classes: int,
    augment: bool = False,
) -> MemoryDatasetFactory:
    """The factory of a dataset given as uint8 (images, labels) tensors, with the validation split
    carved from `train` exactly as the torchvision path carves it (`splits.train_validation`)."""
    images, labels = train
    validation = None
    fraction = config.get("val_fraction", 0.1)
    if fraction > 0:
        kept, carved = split_indices(len(labels), fraction)
        validation = MemorySplit(images[carved], labels[carved], transform)
        images, labels = images[kept], labels[kept]
    return MemoryDatasetFactory(
        MemorySplit(images, labels, transform),
        validation,
        MemorySplit(*test, transform) if test is not None else None,
        device=canonical_device(config.get("device", "cpu")),  # under torchrun: this rank's GPU
        augment=augment,
        input_shape=input_shape,
        num_classes=num_classes,
        **loader_options(config),
    )
