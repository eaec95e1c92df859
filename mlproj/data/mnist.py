"""MNIST and FashionMNIST through torchvision's dataset classes, from IDX files under the data root.

The files live where torchvision puts them: `<data_dir>/MNIST/raw/train-images-idx3-ubyte` and
friends (uncompressed). `prepare` checks them (or downloads them when `download=True`) before the
run starts, and reads each IDX header so a truncated or foreign file is named, not mis-trained on.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING, Any

from mlproj.errors import MLProjError

from .files import ensure_files
from .registry import register_dataset

# torch, torchvision and the loaders are imported inside the functions, lazily: registering the
# datasets (and `mlproj datasets`, which only checks their files) must not pay torch's seconds of import.
if TYPE_CHECKING:
    import torch

    from .factory import DatasetFactory

IDX_FILES = {
    # file name: (magic number, dimensions after the count)
    "train-images-idx3-ubyte": (0x00000803, 2),
    "train-labels-idx1-ubyte": (0x00000801, 0),
    "t10k-images-idx3-ubyte": (0x00000803, 2),
    "t10k-labels-idx1-ubyte": (0x00000801, 0),
}

# Per-channel mean and std of the training images, as everyone normalizes them.
NORMALIZATION = {"MNIST": ((0.1307,), (0.3081,)), "FashionMNIST": ((0.2860,), (0.3530,))}


def raw_folder(data_dir: str, folder: str) -> str:
    return os.path.join(data_dir, folder, "raw")


def check_idx_file(path: str, magic: int, n_dims: int) -> int:
    """Read an IDX header; return the item count or raise `MLProjError` naming the file."""
    try:
        with open(path, "rb") as f:
            header = f.read(4 + 4 * (1 + n_dims))
            size = os.fstat(f.fileno()).st_size
    except OSError as err:
        raise MLProjError(f"cannot read {path}: {err.strerror}. Check its permissions or replace the file.") from None
    if len(header) < 8 or struct.unpack(">I", header[:4])[0] != magic:
        raise MLProjError(
            f"{path} is not an IDX file of the expected kind (bad header): replace it with the original "
            "uncompressed file, or delete it and run with download=True."
        )
    dims = struct.unpack(f">{1 + n_dims}I", header[4:])
    item_size = dims[1] * dims[2] if n_dims == 2 else 1
    expected = len(header) + dims[0] * item_size
    if size != expected:
        raise MLProjError(
            f"{path} is truncated or padded ({size} bytes, its header promises {expected}): replace it "
            "with the original file, or delete it and run with download=True."
        )
    return dims[0]


def prepare_idx_dataset(config: dict[str, Any], folder: str, torchvision_class: str) -> None:
    """Ensure the four IDX files of `folder` (MNIST or FashionMNIST) exist and are well-formed."""
    raw = raw_folder(config["data_dir"], folder)

    def download() -> None:
        import torchvision.datasets  # lazy: registering the datasets must not import torchvision

        getattr(torchvision.datasets, torchvision_class)(config["data_dir"], download=True)

    ensure_files(folder, raw, list(IDX_FILES), config, download, "IDX files (uncompressed)")
    for name, (magic, n_dims) in IDX_FILES.items():
        check_idx_file(os.path.join(raw, name), magic, n_dims)


def read_idx(path: str) -> torch.Tensor:
    """An uncompressed IDX file (checked by `check_idx_file`) as a uint8 tensor of its dimensions."""
    import torch  # lazy: registering the datasets must not import torch

    with open(path, "rb") as f:
        data = f.read()
    n_dims = data[3]
    dims = struct.unpack(f">{n_dims}I", data[4 : 4 + 4 * n_dims])
    return torch.frombuffer(bytearray(data[4 + 4 * n_dims :]), dtype=torch.uint8).reshape(dims)


def build_idx_memory(config: dict[str, Any], folder: str) -> DatasetFactory:
    from .memory import BatchTransform, memory_factory  # lazy: imports torch, which registering the datasets must not

    raw = raw_folder(config["data_dir"], folder)

    def split(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = read_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"))
        return images.unsqueeze(1), read_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte")).long()

    mean, std = NORMALIZATION[folder]
    return memory_factory(config, split("train"), split("t10k"), BatchTransform(mean, std), (1, 28, 28), 10)


def build_idx_dataset(config: dict[str, Any], folder: str, torchvision_class: str) -> DatasetFactory:
    # lazy: the loaders import torch, which registering the datasets must not
    from .memory import use_memory_backend
    from .splits import sets_factory

    if use_memory_backend(config):
        return build_idx_memory(config, folder)
    import torchvision.datasets  # lazy: registering the datasets must not import torchvision
    from torchvision import transforms

    mean, std = NORMALIZATION[folder]
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    cls = getattr(torchvision.datasets, torchvision_class)
    train = cls(config["data_dir"], train=True, download=False, transform=transform)
    test = cls(config["data_dir"], train=False, download=False, transform=transform)
    return sets_factory(config, train, test, (1, 28, 28), 10)


def _prepare_mnist(config: dict[str, Any]) -> None:
    prepare_idx_dataset(config, "MNIST", "MNIST")


def _prepare_fashion_mnist(config: dict[str, Any]) -> None:
    prepare_idx_dataset(config, "FashionMNIST", "FashionMNIST")


@register_dataset("mnist", input_shape=(1, 28, 28), num_classes=10, prepare=_prepare_mnist)
def mnist(config: dict[str, Any]) -> DatasetFactory:
    return build_idx_dataset(config, "MNIST", "MNIST")


@register_dataset("fashion_mnist", input_shape=(1, 28, 28), num_classes=10, prepare=_prepare_fashion_mnist)
def fashion_mnist(config: dict[str, Any]) -> DatasetFactory:
    return build_idx_dataset(config, "FashionMNIST", "FashionMNIST")
