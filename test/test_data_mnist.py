"""MNIST and FashionMNIST from IDX files in torchvision's layout, through the real factories."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_mnist

from mlproj.data import create_dataset_factory, prepare_dataset
from mlproj.errors import MLProjError


def config(data_dir: Path, dataset: str = "mnist", **extra) -> dict:
    return {"dataset": dataset, "data_dir": str(data_dir), "download": False, "batch_size": 32,
            "val_fraction": 0.1, "seed": 0, **extra}


@pytest.mark.parametrize(("dataset", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_factory_idx_files_load_as_normalized_tensors(tmp_path: Path, dataset: str, folder: str) -> None:
    make_mnist(tmp_path, folder, n_train=100, n_test=30)
    prepare_dataset(config(tmp_path, dataset))
    factory = create_dataset_factory(config(tmp_path, dataset))
    assert len(factory.train_set()) == 90 and len(factory.validation_set()) == 10
    assert len(factory.test_set()) == 30
    images, labels = next(iter(factory.train_loader()))
    assert images.shape == (32, 1, 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert images.max() > 2.0  # the bright blocks, normalized with MNIST's mean and std


def test_mnist_prepare_missing_files_without_download_names_folder_and_fix(tmp_path: Path) -> None:
    with pytest.raises(MLProjError, match=r"MNIST not found under .*MNIST/raw.*download=False.*dataset=digits"):
        prepare_dataset(config(tmp_path))


def test_mnist_prepare_partial_files_lists_missing_ones(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(MLProjError, match="missing t10k-labels-idx1-ubyte"):
        prepare_dataset(config(tmp_path))


def test_mnist_prepare_corrupt_idx_header_names_file(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x01" + path.read_bytes()[4:])  # a label magic on an image file
    with pytest.raises(MLProjError, match="train-images-idx3-ubyte is not an IDX file"):
        prepare_dataset(config(tmp_path))


def test_mnist_prepare_truncated_idx_file_names_file(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MLProjError, match="t10k-images-idx3-ubyte is truncated"):
        prepare_dataset(config(tmp_path))


def test_mnist_prepare_download_failure_says_where_files_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(MLProjError, match="download failed.*put the IDX files.*there, or run with dataset=digits"):
        prepare_dataset(config(tmp_path, download=True))
