"""`dataset=image_folder`: your own images, in torchvision's `ImageFolder` layout, decoded once.

`data_dir` holds `train/<class>/*` and optionally `val/<class>/*` and `test/<class>/*`; a `data_dir`
holding class folders directly is the training set. Without `val/`, validation is carved with
`val_fraction` as for the other datasets. Every image (any mode, any format Pillow reads) becomes RGB
`image_size` x `image_size`: the short side resized, then center-cropped.

Decoding is the slow part, so it happens once: each split's uint8 tensor is cached in
`<data_dir>/.mlproj-cache/`, keyed by the files' names, sizes and mtimes and `image_size`. A later
run (and `prepare`, which decodes before the run is recorded, so a broken file costs no run folder)
reads the cache instead of the images. Batches then come from the in-memory path (`memory.py`),
whatever `data_backend` says: random crop and flip for training unless `augment=False`, normalized
by the training set's per-channel mean and std.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from mlproj.errors import MLProjError
from mlproj.util.device import canonical_device
from mlproj.util.files import atomic_write

from .registry import register_dataset

# torch and Pillow are imported inside the functions, lazily: registering the datasets (and
# `mlproj datasets`) must not pay torch's seconds of import.
if TYPE_CHECKING:
    import torch

    from .factory import DatasetFactory

# The extensions torchvision's ImageFolder accepts (torchvision.datasets.folder.IMG_EXTENSIONS).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CACHE_FOLDER = ".mlproj-cache"
CACHE_VERSION = 1  # bump when decoding changes, so old caches are not read as new ones
SPLIT_FOLDERS = {"train": "train", "validation": "val", "test": "test"}


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def load_image(path: str, size: int, mode: str = "RGB") -> torch.Tensor:
    """The image at `path` as a uint8 (C, size, size) tensor in `mode` ("RGB" or "L"): the short side
    resized to `size` (bilinear), then center-cropped, as torchvision's Resize + CenterCrop do.

    Raises:
        MLProjError: naming the file when Pillow cannot read it.
    """
    # lazy: registering the datasets must not import torch, numpy or Pillow
    import numpy as np
    import torch
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft(mode, (size, size))  # JPEG: decode at a reduced scale, still >= size
            image = image.convert(mode)  # palette, RGBA, grayscale, CMYK, 16-bit ...
            width, height = image.size
            short, long = min(width, height), max(width, height)
            long = int(size * long / short)
            new = (size, long) if width <= height else (long, size)
            image = image.resize(new, Image.BILINEAR)
            left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
            image = image.crop((left, top, left + size, top + size))
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MLProjError(f"cannot read image {path} ({reason[:120]}): replace or delete the file.") from None
    pixels = pixels.reshape(size, size, -1)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------------------------- the layout
# The errors below say "not found" for a missing folder or no images: `mlproj datasets` lists that as missing.
def split_folders(data_dir: str) -> dict[str, str | None]:
    """The folder of each split (None when absent): `train/`, `val/`, `test/`, or `data_dir` itself
    as the training set when it holds class folders directly."""
    if not os.path.isdir(data_dir):
        raise MLProjError(
            f"image_folder: data_dir {data_dir} not found (or not a folder): pass data_dir=<a folder holding train/<class>/ "
            "image folders, or class folders directly>."
        )
    train = os.path.join(data_dir, "train")
    if not os.path.isdir(train):
        return {"train": data_dir, "validation": None, "test": None}
    folders = {split: os.path.join(data_dir, name) for split, name in SPLIT_FOLDERS.items()}
    return {split: (folder if os.path.isdir(folder) else None) for split, folder in folders.items()}


def class_names(train_folder: str) -> list[str]:
    """The class folders of the training set, sorted (as ImageFolder numbers them)."""
    names = sorted(e.name for e in os.scandir(train_folder) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise MLProjError(
            f"image_folder: class folders not found in {train_folder}: put each class's images in "
            f"{os.path.join(train_folder, '<class>')}/."
        )
    return names


def list_images(folder: str, classes: list[str]) -> list[tuple[str, int]]:
    """(path, label) of every image under `folder/<class>/` (recursively), sorted."""
    known = {name: label for label, name in enumerate(classes)}
    samples = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if entry.name not in known:
            raise MLProjError(
                f"image_folder: {entry.path} is a class the training set does not have ({', '.join(classes)}): "
                "add it to train/ as well, or remove it."
            )
        for root, dirs, files in os.walk(entry.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            samples += [(os.path.join(root, f), known[entry.name]) for f in sorted(files) if is_image_file(f)]
    return samples


# ---------------------------------------------------------------------------------------- decoding
def cache_key(samples: list[tuple[str, int]], size: int, root: str) -> str:
    """A digest of every file's name (under `root`), size, mtime and label, and `size`: any change
    decodes anew."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, size]).encode())
    for path, label in samples:
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{label}\n".encode())
    return digest.hexdigest()[:16]


def decode_split(samples: list[tuple[str, int]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image of a split into one uint8 (N, 3, size, size) tensor, with int64 labels."""
    import torch  # lazy: registering the datasets must not import torch

    images = torch.empty((len(samples), 3, size, size), dtype=torch.uint8)

    def decode(i: int) -> None:
        images[i] = load_image(samples[i][0], size)

    # Pillow releases the GIL while it decodes: threads use every core without copying the result.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(decode, range(len(samples))))
    return images, torch.tensor([label for _, label in samples], dtype=torch.int64)


def cached_split(data_dir: str, split: str, samples: list[tuple[str, int]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoded split from the cache when its key matches, else decoded and cached."""
    import torch  # lazy: registering the datasets must not import torch

    folder = os.path.join(data_dir, CACHE_FOLDER)
    prefix = f"{split}-{size}px-"
    path = os.path.join(folder, f"{prefix}{cache_key(samples, size, data_dir)}.pt")
    if os.path.isfile(path):
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            return cached["images"], cached["labels"]
        except Exception:  # a damaged cache is only a cache: decode again
            pass
    images, labels = decode_split(samples, size)
    try:
        os.makedirs(folder, exist_ok=True)
        atomic_write(path, lambda f: torch.save({"images": images, "labels": labels}, f))
        for stale in os.listdir(folder):  # the same split decoded from files since changed
            if stale.startswith(prefix) and stale != os.path.basename(path):
                os.remove(os.path.join(folder, stale))
    except OSError as err:  # a read-only data folder: train anyway, decode again next time
        print(f"image_folder: cannot write the decoded cache in {folder} ({err.strerror}); "
              "the next run decodes the images again.", flush=True)
    return images, labels


def check_config(config: dict[str, Any]) -> int:
    """`image_size` (returned) and `augment` are this dataset's keys: it checks them itself."""
    size = config.get("image_size", 64)
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise MLProjError(f"config image_size={size!r} is invalid: expected an integer >= 8. Run with image_size=<value> to fix it.")
    if config.get("augment", True) not in (True, False):
        raise MLProjError(f"config augment={config['augment']!r} is invalid: expected True or False. "
                          "Run with augment=<value> to fix it.")
    return size


def load_image_folder(config: dict[str, Any]) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor] | None], list[str]]:
    """Every split of config `data_dir` decoded (from the cache when it is current), and the class names."""
    size = check_config(config)
    data_dir = str(config["data_dir"])
    folders = split_folders(data_dir)
    classes = class_names(folders["train"])
    splits: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}
    for split, folder in folders.items():
        samples = list_images(folder, classes) if folder else []
        if split == "train" and not samples:
            raise MLProjError(
                f"image_folder: images not found under {folder}/<class>/ (extensions {', '.join(IMAGE_EXTENSIONS)}): "
                "put the training images there."
            )
        splits[split] = cached_split(data_dir, split, samples, size) if samples else None
    return splits, classes


def _prepare(config: dict[str, Any]) -> None:
    load_image_folder(config)  # decodes (and caches) now: a broken image fails before the run is recorded


def _describe(config: dict[str, Any]) -> tuple[tuple[int, int, int], int]:
    size = check_config(config)
    return (3, size, size), len(class_names(split_folders(str(config["data_dir"]))["train"]))


def channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images scaled to [0, 1]."""
    import torch  # lazy: registering the datasets must not import torch

    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for i in range(0, len(images), 1024):  # in chunks: a float copy of the whole set may not fit
        chunk = images[i : i + 1024].double().div_(255)
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


@register_dataset("image_folder", input_shape=(3, 64, 64), num_classes=0, prepare=_prepare, describe=_describe)
def image_folder(config: dict[str, Any]) -> DatasetFactory:
    """Your own images (module docstring); the factory's `class_names` are the class folders' names."""
    # lazy: the loaders import torch, which registering the datasets must not
    from .memory import BatchTransform, MemoryDatasetFactory, MemorySplit
    from .splits import loader_options, split_indices

    splits, classes = load_image_folder(config)
    size = check_config(config)
    images, labels = splits["train"]
    validation = splits["validation"]
    fraction = config.get("val_fraction", 0.1)
    if validation is None and fraction > 0:
        kept, carved = split_indices(len(labels), fraction)
        validation = (images[carved], labels[carved])
        images, labels = images[kept], labels[kept]
    mean, std = channel_statistics(images)
    # RandomCrop(size, padding=size/8) and a horizontal flip: CIFAR's recipe, scaled to the image size.
    transform = BatchTransform(mean, std, crop_padding=max(1, size // 8), flip=True)
    factory = MemoryDatasetFactory(
        MemorySplit(images, labels, transform),
        MemorySplit(*validation, transform) if validation is not None else None,
        MemorySplit(*splits["test"], transform) if splits["test"] is not None else None,
        device=canonical_device(config.get("device", "cpu")),
        augment=bool(config.get("augment", True)),
        input_shape=(3, size, size),
        num_classes=len(classes),
        **loader_options(config),
    )
    factory.class_names = classes  # what predictions are labelled with (saved in checkpoints)
    return factory
