"""CIFAR-10 and CIFAR-100 through torchvision's classes, from the python pickle batches.

torchvision checks the md5 of every batch file. Files you made yourself (tests do, and so do users
with their own data in this format) cannot pass that check: `verify_checksums=False` lets them
through while still requiring every file to be present.
"""

from __future__ import annotations

import os
import pickle
from typing import TYPE_CHECKING, Any, NamedTuple

from mlproj.errors import MLProjError

from .files import ensure_files
from .registry import register_dataset

# torch, torchvision and the loaders are imported inside the functions, lazily: registering the
# datasets (and `mlproj datasets`, which only checks their files) must not pay torch's seconds of import.
if TYPE_CHECKING:
    import torch

    from .factory import DatasetFactory

NORMALIZATION = {
    "CIFAR10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "CIFAR100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class _Layout(NamedTuple):
    base_folder: str
    train: list[str]
    test: list[str]
    meta: str


# The files torchvision's CIFAR10/CIFAR100 classes read (their base_folder, train_list, test_list and
# meta), written out so that checking for them needs no torchvision.
LAYOUTS = {
    "CIFAR10": _Layout("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    "CIFAR100": _Layout("cifar-100-python", ["train"], ["test"], "meta"),
}


def _torchvision_class(name: str, verify_checksums: bool) -> type:
    import torchvision.datasets  # lazy: registering the datasets must not import torchvision

    cls = getattr(torchvision.datasets, name)
    if verify_checksums:
        return cls

    class Unverified(cls):  # type: ignore[misc, valid-type]
        def _check_integrity(self) -> bool:
            return all(
                os.path.exists(os.path.join(self.root, self.base_folder, filename))
                for filename, _ in self.train_list + self.test_list
            )

        def _load_meta(self) -> None:
            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    return Unverified


def prepare_cifar(config: dict[str, Any], name: str) -> None:
    """Ensure the batch files of CIFAR10 or CIFAR100 are present (and match their md5 if asked)."""
    verify = config.get("verify_checksums", True)
    layout = LAYOUTS[name]
    folder = os.path.join(config["data_dir"], layout.base_folder)
    files = [*layout.train, *layout.test, layout.meta]
    ensure_files(name, folder, files, config, lambda: _torchvision_class(name, verify)(config["data_dir"], download=True),
                 "python pickle batches")
    if verify:
        # lazy: registering the datasets must not import torchvision
        from torchvision.datasets.utils import check_integrity

        cls = _torchvision_class(name, verify)
        for filename, md5 in cls.train_list + cls.test_list:
            if not check_integrity(os.path.join(folder, filename), md5):
                raise MLProjError(
                    f"{os.path.join(folder, filename)} fails torchvision's md5 check: replace it with the "
                    "original file, or run with verify_checksums=False if you made these files yourself."
                )


def read_cifar_batches(folder: str, files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The python pickle batches `files` as uint8 images (N, 3, 32, 32) and int64 labels."""
    # lazy: registering the datasets must not import torch or numpy
    import numpy as np
    import torch

    images, labels = [], []
    for filename in files:
        with open(os.path.join(folder, filename), "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        images.append(torch.as_tensor(np.asarray(entry["data"], dtype=np.uint8)).reshape(-1, 3, 32, 32))
        labels.append(torch.as_tensor(entry["labels"] if "labels" in entry else entry["fine_labels"]))
    return torch.cat(images), torch.cat(labels).long()


def build_cifar_memory(config: dict[str, Any], name: str, num_classes: int) -> DatasetFactory:
    from .memory import BatchTransform, memory_factory  # lazy: imports torch, which registering the datasets must not

    cls = LAYOUTS[name]
    folder = os.path.join(config["data_dir"], cls.base_folder)
    try:
        train, test = read_cifar_batches(folder, cls.train), read_cifar_batches(folder, cls.test)
    except Exception as err:  # unpickling a foreign or truncated batch
        raise MLProjError(
            f"{name} batches under {folder} cannot be read ({type(err).__name__}: {err}): replace them with "
            "the original python pickle batches."
        ) from None
    mean, std = NORMALIZATION[name]
    transform = BatchTransform(mean, std, crop_padding=4, flip=True)
    return memory_factory(config, train, test, transform, (3, 32, 32), num_classes, augment=True)


def build_cifar(config: dict[str, Any], name: str, num_classes: int) -> DatasetFactory:
    # lazy: the loaders import torch, which registering the datasets must not
    from .memory import use_memory_backend
    from .splits import sets_factory

    if use_memory_backend(config):
        return build_cifar_memory(config, name, num_classes)
    from torchvision import transforms  # lazy: registering the datasets must not import torchvision

    cls = _torchvision_class(name, config.get("verify_checksums", True))
    mean, std = NORMALIZATION[name]
    plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    augmented = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), plain]
    )
    root = config["data_dir"]
    try:
        train = cls(root, train=True, download=False, transform=augmented)
        train_plain = cls(root, train=True, download=False, transform=plain)
        test = cls(root, train=False, download=False, transform=plain)
    except Exception as err:  # unpickling a foreign or truncated batch
        raise MLProjError(
            f"{name} batches under {os.path.join(root, cls.base_folder)} cannot be read ({type(err).__name__}: "
            f"{err}): replace them with the original python pickle batches."
        ) from None
    return sets_factory(config, train, test, (3, 32, 32), num_classes, eval_view=train_plain)


@register_dataset("cifar10", input_shape=(3, 32, 32), num_classes=10, prepare=lambda c: prepare_cifar(c, "CIFAR10"))
def cifar10(config: dict[str, Any]) -> DatasetFactory:
    return build_cifar(config, "CIFAR10", 10)


@register_dataset(
    "cifar100", input_shape=(3, 32, 32), num_classes=100, prepare=lambda c: prepare_cifar(c, "CIFAR100")
)
def cifar100(config: dict[str, Any]) -> DatasetFactory:
    return build_cifar(config, "CIFAR100", 100)
