"""ClutteredMNIST: generated deterministically from MNIST IDX files and cached."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import make_mnist

from mlproj.data import create_dataset_factory, prepare_dataset
from mlproj.data.cluttered import CANVAS, clutter


def test_clutter_same_seed_same_images_digit_kept() -> None:
    digits = torch.zeros(5, 28, 28, dtype=torch.uint8)
    digits[:, 10:18, 10:18] = 200
    a, b = clutter(digits, seed=1), clutter(digits, seed=1)
    assert a.shape == (5, CANVAS, CANVAS)
    assert torch.equal(a, b)
    assert not torch.equal(a, clutter(digits, seed=2))
    assert (a == 200).flatten(1).sum(1).min() >= 64  # every digit's 8x8 block survives


def test_cluttered_factory_generates_then_reuses_cache(tmp_path: Path) -> None:
    make_mnist(tmp_path, n_train=40, n_test=10)
    config = {"dataset": "cluttered_mnist", "data_dir": str(tmp_path), "download": False, "batch_size": 8,
              "val_fraction": 0.25, "seed": 0}
    prepare_dataset(config)
    factory = create_dataset_factory(config)
    (cache,) = (tmp_path / "ClutteredMNIST").iterdir()
    images, _ = next(iter(factory.train_loader()))
    assert images.shape == (8, 1, CANVAS, CANVAS)
    stamp = cache.stat().st_mtime_ns
    again = create_dataset_factory(config)
    assert cache.stat().st_mtime_ns == stamp
    first, second = (torch.stack([factory_.test_set()[i][0] for i in range(10)]) for factory_ in (again, factory))
    assert torch.equal(first, second)
