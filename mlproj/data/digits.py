"""scikit-learn's bundled 8x8 handwritten digits: real data that need no download."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .registry import register_dataset

# torch, torchvision and the loaders are imported inside the functions, lazily: registering the
# datasets (and `mlproj datasets`, which only checks their files) must not pay torch's seconds of import.
if TYPE_CHECKING:
    import torch

    from .factory import DatasetFactory

TEST_FRACTION = 0.2


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as (N, 1, 8, 8) float images in [0, 1] and int64 labels."""
    # lazy: registering the datasets must not import torch or scikit-learn
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(digits.target, dtype=torch.int64)


@register_dataset("digits", input_shape=(1, 8, 8), num_classes=10)
def digits(config: dict[str, Any]) -> DatasetFactory:
    """A fixed 20% test split; validation carved from the rest by `val_fraction`."""
    # lazy: the loaders import torch, which registering the datasets must not
    import torch
    from torch.utils.data import TensorDataset

    from .memory import BatchTransform, memory_factory, use_memory_backend
    from .splits import sets_factory, split_indices

    images, labels = load_digits_tensors()
    train_idx, test_idx = split_indices(len(labels), TEST_FRACTION)
    mean, std = images[train_idx].mean(), images[train_idx].std()
    if use_memory_backend(config):
        pixels = (images * 16).round().to(torch.uint8)  # the original 0..16 grey levels
        transform = BatchTransform((mean.item(),), (std.item(),), scale=16.0)
        train = (pixels[train_idx], labels[train_idx])
        return memory_factory(config, train, (pixels[test_idx], labels[test_idx]), transform, (1, 8, 8), 10)
    images = (images - mean) / std
    train = TensorDataset(images[train_idx], labels[train_idx])
    test = TensorDataset(images[test_idx], labels[test_idx])
    return sets_factory(config, train, test, (1, 8, 8), 10)
