"""DatasetFactory as the original template built it, and the EpochSampler behind its loaders."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mlproj.data import DatasetFactory, EpochSampler, register_dataset
from mlproj.data.registry import create_dataset_factory, dataset_spec
from mlproj.errors import MLProjError


def tensors(n: int) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n) % 2)


def test_factory_original_keywords_expose_sets_and_loaders() -> None:
    test_loader = DataLoader(tensors(4), batch_size=2)
    factory = DatasetFactory(train_set=tensors(10), test_set=tensors(4), test_loader=test_loader, batch_size=3)
    assert factory.has_test_set() and not factory.has_validation_set()
    assert factory.validation_set() is None and factory.validation_loader() is None
    assert factory.test_loader() is test_loader
    assert len(factory.train_loader()) == 4  # ceil(10 / 3)
    assert sorted(torch.cat([x for x, _ in factory.train_loader()]).flatten().tolist()) == list(range(10))


def test_factory_outside_loader_cannot_skip_by_itself() -> None:
    factory = DatasetFactory(train_loader=DataLoader(tensors(6), batch_size=2))
    assert factory.set_epoch(1, start_batch=1) is False


def test_epoch_sampler_resumed_mid_epoch_yields_the_rest_of_that_epoch() -> None:
    full = EpochSampler(20, seed=7)
    full.set_epoch(3)
    resumed = EpochSampler(20, seed=7)
    resumed.set_epoch(3, start=8)
    assert list(resumed) == list(full)[8:]
    assert len(resumed) == 12


def test_register_dataset_name_usable_by_config() -> None:
    @register_dataset("ten_points", input_shape=(1, 1, 1), num_classes=2)
    def ten_points(config: dict) -> DatasetFactory:
        return DatasetFactory(train_set=tensors(10), batch_size=config["batch_size"])

    factory = create_dataset_factory({"dataset": "ten_points", "batch_size": 5})
    assert len(factory.train_loader()) == 2
    assert dataset_spec("ten_points").num_classes == 2


def test_dataset_spec_unknown_name_lists_known_ones() -> None:
    with pytest.raises(MLProjError, match=r"dataset='imagenet' is unknown: use one of .*digits.*mnist"):
        dataset_spec("imagenet")


def test_factory_shard_ready_train_loader_raises() -> None:
    factory = DatasetFactory(train_loader=DataLoader(tensors(6), batch_size=2))
    with pytest.raises(MLProjError, match="ready train_loader.*give it train_set= instead"):
        factory.shard(1, 2)
