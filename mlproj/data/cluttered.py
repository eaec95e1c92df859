"""ClutteredMNIST: MNIST digits placed at random on a larger canvas among patches of other digits.

Generated once from the MNIST IDX files with a fixed seed and cached under
`<data_dir>/ClutteredMNIST/`, so every run (and every machine) trains on the same images.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mlproj.util.files import atomic_write

from .mnist import NORMALIZATION, prepare_idx_dataset
from .registry import register_dataset

# torch, torchvision and the loaders are imported inside the functions, lazily: registering the
# datasets (and `mlproj datasets`, which only checks their files) must not pay torch's seconds of import.
if TYPE_CHECKING:
    import torch

    from .factory import DatasetFactory

CANVAS = 60
N_CLUTTER = 4
CLUTTER_SIZE = 8
GENERATION_SEED = 0


def clutter(
    digits: torch.Tensor, canvas: int = CANVAS, n_clutter: int = N_CLUTTER, patch: int = CLUTTER_SIZE, seed: int = GENERATION_SEED
) -> torch.Tensor:
    """Place each (28x28 uint8) digit at random on a `canvas` square with `n_clutter` patches cut
    from random other digits; deterministic in `seed`."""
    import torch  # lazy: registering the datasets must not import torch

    g = torch.Generator().manual_seed(seed)
    n, size = digits.shape[0], digits.shape[-1]
    out = torch.zeros(n, canvas, canvas, dtype=torch.uint8)
    sources = torch.randint(0, n, (n, n_clutter), generator=g)
    cut_at = torch.randint(0, size - patch + 1, (n, n_clutter, 2), generator=g)
    put_at = torch.randint(0, canvas - patch + 1, (n, n_clutter, 2), generator=g)
    digit_at = torch.randint(0, canvas - size + 1, (n, 2), generator=g)
    for i in range(n):
        for k in range(n_clutter):
            (cy, cx), (py, px) = cut_at[i, k].tolist(), put_at[i, k].tolist()
            piece = digits[sources[i, k], cy : cy + patch, cx : cx + patch]
            region = out[i, py : py + patch, px : px + patch]
            torch.maximum(region, piece, out=region)
        y, x = digit_at[i].tolist()
        region = out[i, y : y + size, x : x + size]
        torch.maximum(region, digits[i], out=region)
    return out


def cached_cluttered(config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The cluttered train and test tensors, generated on first use and cached under the data root."""
    import torch  # lazy: registering the datasets must not import torch

    path = os.path.join(config["data_dir"], "ClutteredMNIST", f"cluttered-{CANVAS}-{N_CLUTTER}-{GENERATION_SEED}.pt")
    if os.path.exists(path):
        return torch.load(path, weights_only=True)
    import torchvision.datasets  # lazy: registering the datasets must not import torchvision

    data = {}
    for split, train in (("train", True), ("test", False)):
        mnist = torchvision.datasets.MNIST(config["data_dir"], train=train, download=False)
        data[f"{split}_images"] = clutter(mnist.data, seed=GENERATION_SEED + int(train))
        data[f"{split}_labels"] = mnist.targets.clone()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: torch.save(data, f))
    return data


def _normalized(images: torch.Tensor) -> torch.Tensor:
    (mean,), (std,) = NORMALIZATION["MNIST"]
    return ((images.float() / 255.0) - mean).div_(std).unsqueeze(1)


@register_dataset(
    "cluttered_mnist",
    input_shape=(1, CANVAS, CANVAS),
    num_classes=10,
    prepare=lambda c: prepare_idx_dataset(c, "MNIST", "MNIST"),
)
def cluttered_mnist(config: dict[str, Any]) -> DatasetFactory:
    # lazy: the loaders import torch, which registering the datasets must not
    from torch.utils.data import TensorDataset

    from .memory import BatchTransform, memory_factory, use_memory_backend
    from .splits import sets_factory

    data = cached_cluttered(config)
    if use_memory_backend(config):
        transform = BatchTransform(*NORMALIZATION["MNIST"])
        train, test = (data["train_images"], data["train_labels"]), (data["test_images"], data["test_labels"])
        return memory_factory(config, train, test, transform, (1, CANVAS, CANVAS), 10)
    train = TensorDataset(_normalized(data["train_images"]), data["train_labels"])
    test = TensorDataset(_normalized(data["test_images"]), data["test_labels"])
    return sets_factory(config, train, test, (1, CANVAS, CANVAS), 10)
