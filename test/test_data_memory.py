"""The in-memory data path gives the samples, order and normalization of the torchvision path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_cifar, make_mnist

from mlproj.data import create_dataset_factory
from mlproj.errors import MLProjError
from mlproj.train.loop import MLProject


def factory(dataset: str, root: Path, backend: str, **extra):
    config = {"dataset": dataset, "data_dir": str(root), "data_backend": backend, "verify_checksums": False,
              "batch_size": 16, "seed": 3, **extra}
    return create_dataset_factory(config)


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in loader]


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (images_a, labels_a), (images_b, labels_b) in zip(a, b, strict=True):
        assert torch.equal(images_a, images_b)
        assert torch.equal(labels_a, labels_b)


@pytest.mark.parametrize("dataset", ["mnist", "digits"])
def test_memory_mnist_and_digits_every_split_equals_torchvision_path(tmp_path: Path, dataset: str) -> None:
    make_mnist(tmp_path)
    memory, reference = factory(dataset, tmp_path, "memory"), factory(dataset, tmp_path, "torchvision")
    for f in (memory, reference):
        f.set_epoch(2)
    assert_same_batches(batches(memory.train_loader()), batches(reference.train_loader()))
    assert_same_batches(batches(memory.validation_loader()), batches(reference.validation_loader()))
    assert_same_batches(batches(memory.test_loader()), batches(reference.test_loader()))


def test_memory_cifar_evaluation_splits_equal_torchvision_path(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    memory, reference = factory("cifar10", tmp_path, "memory"), factory("cifar10", tmp_path, "torchvision")
    assert_same_batches(batches(memory.validation_loader()), batches(reference.validation_loader()))
    assert_same_batches(batches(memory.test_loader()), batches(reference.test_loader()))


def test_memory_cifar_training_images_are_padded_crops_or_flips_of_the_originals(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    memory = factory("cifar10", tmp_path, "memory", val_fraction=0.0)
    reference = factory("cifar10", tmp_path, "torchvision", val_fraction=0.0)
    # Same order and labels as the torchvision path; each image one of the 9x9 crops x 2 flips of its original.
    memory.set_epoch(0)
    reference.set_epoch(0)
    order = reference._sampler.indices()
    images, labels = next(iter(memory.train_loader()))
    assert torch.equal(labels, next(iter(reference.train_loader()))[1])
    train_plain = factory("cifar10", tmp_path, "memory", val_fraction=0.0).train_set()
    mean = torch.tensor((0.4914, 0.4822, 0.4465)).view(3, 1, 1)
    std = torch.tensor((0.2470, 0.2435, 0.2616)).view(3, 1, 1)
    flipped_any = False
    for k in range(images.shape[0]):
        original, _ = train_plain[int(order[k])]
        padded = ((0 - mean) / std).expand(3, 40, 40).clone()  # a black (0) pixel, normalized
        padded[:, 4:36, 4:36] = original
        candidates = [(padded[:, y : y + 32, x : x + 32], flip) for y in range(9) for x in range(9) for flip in (0, 1)]
        matches = [flip for crop, flip in candidates if torch.equal(crop.flip(-1) if flip else crop, images[k])]
        assert matches, f"image {k} is no crop/flip of its original"
        flipped_any |= 1 in matches and 0 not in matches
    assert flipped_any  # 16 fair coin flips: some image is flipped


def test_memory_resumed_epoch_continues_with_the_same_augmented_batches(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    f = factory("cifar10", tmp_path, "memory", batch_size=8)
    f.set_epoch(1)
    full = batches(f.train_loader())
    f.set_epoch(1, start_batch=3)
    assert_same_batches(batches(f.train_loader()), full[3:])


def test_memory_shards_cover_the_epoch_with_equal_lengths(tmp_path: Path) -> None:
    make_mnist(tmp_path)

    def samples(shard: list) -> list[tuple[bytes, int]]:
        return [(image.numpy().tobytes(), int(label)) for images, labs in shard for image, label in zip(images, labs, strict=True)]

    labels, lengths, seen = [], [], []
    for rank in (0, 1):
        f = factory("mnist", tmp_path, "memory", batch_size=7)
        f.shard(rank, 2)
        f.set_epoch(0)
        shard = batches(f.train_loader())
        lengths.append(len(shard))
        labels.append(sum(len(lab) for _, lab in shard))
        seen += samples(shard)
    f = factory("mnist", tmp_path, "memory", batch_size=7)
    f.set_epoch(0)
    whole = samples(batches(f.train_loader()))
    assert lengths[0] == lengths[1]
    assert labels[0] == labels[1] == (len(f.train_set()) + 1) // 2
    assert set(seen) == set(whole)  # every sample of the epoch in some shard (one repeated to even them out)


def test_memory_backend_is_the_default(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    f = create_dataset_factory({"dataset": "mnist", "data_dir": str(tmp_path), "batch_size": 8})
    assert type(f).__name__ == "MemoryDatasetFactory"


def test_config_data_backend_unknown_raises(tmp_path: Path) -> None:
    with pytest.raises(MLProjError, match="data_backend='pil' is invalid"):
        MLProject({"dataset": "digits", "model": "mlp", "data_backend": "pil", "tensorboard_dir": None})
