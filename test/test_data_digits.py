"""scikit-learn's digits: real data, fixed splits."""

from __future__ import annotations

import torch

from mlproj.data import create_dataset_factory


def test_digits_splits_disjoint_and_fixed_across_run_seeds() -> None:
    a = create_dataset_factory({"dataset": "digits", "batch_size": 16, "val_fraction": 0.1, "seed": 1})
    b = create_dataset_factory({"dataset": "digits", "batch_size": 16, "val_fraction": 0.1, "seed": 2})
    assert len(a.train_set()) + len(a.validation_set()) + len(a.test_set()) == 1797
    val_images = torch.stack([x for x, _ in a.validation_set()])
    assert torch.equal(val_images, torch.stack([x for x, _ in b.validation_set()]))
    train_images = torch.stack([x for x, _ in a.train_set()])
    # No validation image appears in the training set.
    assert not (val_images.flatten(1)[:, None] == train_images.flatten(1)[None]).all(-1).any()


def test_digits_train_order_depends_on_seed_and_epoch() -> None:
    factory = create_dataset_factory({"dataset": "digits", "batch_size": 1000, "val_fraction": 0.0, "seed": 3})
    factory.set_epoch(0)
    epoch0 = next(iter(factory.train_loader()))[1]
    factory.set_epoch(1)
    epoch1 = next(iter(factory.train_loader()))[1]
    factory.set_epoch(0)
    assert torch.equal(next(iter(factory.train_loader()))[1], epoch0)
    assert not torch.equal(epoch0, epoch1)
