"""CIFAR-10/100 from python pickle batches, with and without torchvision's md5 check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_cifar

from mlproj.data import create_dataset_factory, prepare_dataset
from mlproj.data.cifar import LAYOUTS, NORMALIZATION, read_cifar_batches
from mlproj.data.memory import BatchTransform
from mlproj.data.splits import split_indices
from mlproj.errors import MLProjError


def config(data_dir: Path, dataset: str, **extra) -> dict:
    return {"dataset": dataset, "data_dir": str(data_dir), "download": False, "batch_size": 8,
            "val_fraction": 0.2, "seed": 0, "verify_checksums": False, **extra}


@pytest.mark.parametrize(("dataset", "n_classes"), [("cifar10", 10), ("cifar100", 100)])
def test_cifar_factory_batches_load_without_checksums(tmp_path: Path, dataset: str, n_classes: int) -> None:
    make_cifar(tmp_path, dataset, n_per_batch=10)
    prepare_dataset(config(tmp_path, dataset))
    factory = create_dataset_factory(config(tmp_path, dataset))
    assert len(factory.train_set()) == 40 and len(factory.validation_set()) == 10
    assert len(factory.test_set()) == 10
    images, labels = next(iter(factory.train_loader()))
    assert images.shape == (8, 3, 32, 32)
    assert int(labels.max()) < n_classes
    assert factory.num_classes == n_classes


@pytest.mark.parametrize("backend", ["memory", "torchvision"])
def test_cifar_validation_split_is_not_augmented(tmp_path: Path, backend: str) -> None:
    make_cifar(tmp_path, "cifar10", n_per_batch=10)
    factory = create_dataset_factory(config(tmp_path, "cifar10", data_backend=backend, batch_size=10))
    # The carved images, normalized and nothing else: a random crop or flip would change some of them.
    images, _ = read_cifar_batches(str(tmp_path / "cifar-10-batches-py"), LAYOUTS["CIFAR10"].train)
    _, carved = split_indices(len(images), 0.2)
    mean, std = NORMALIZATION["CIFAR10"]
    expected = BatchTransform(mean, std)(images[carved])
    for epoch in (0, 1):
        factory.set_epoch(epoch)
        assert torch.equal(torch.cat([x for x, _ in factory.validation_loader()]), expected)


def test_cifar_prepare_own_files_fail_md5_with_fix(tmp_path: Path) -> None:
    make_cifar(tmp_path, "cifar10")
    with pytest.raises(MLProjError, match="fails torchvision's md5 check.*verify_checksums=False"):
        prepare_dataset(config(tmp_path, "cifar10", verify_checksums=True))


def test_cifar_prepare_missing_batches_named(tmp_path: Path) -> None:
    make_cifar(tmp_path, "cifar100")
    (tmp_path / "cifar-100-python" / "test").unlink()
    with pytest.raises(MLProjError, match=r"CIFAR100 not found under .*cifar-100-python \(missing test\)"):
        prepare_dataset(config(tmp_path, "cifar100"))


def test_cifar_layouts_name_the_files_torchvision_reads() -> None:
    import torchvision.datasets

    for name, layout in LAYOUTS.items():
        cls = getattr(torchvision.datasets, name)
        assert layout.base_folder == cls.base_folder and layout.meta == cls.meta["filename"]
        assert (layout.train, layout.test) == ([f for f, _ in cls.train_list], [f for f, _ in cls.test_list])
