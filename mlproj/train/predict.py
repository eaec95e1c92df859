"""Predictions: class probabilities for a batch, and labelled rows for image files.

A checkpoint records what its model's inputs look like (`dataset_info`, under the key `data`):
input shape, class names and the normalization of training. That is all prediction needs, so
`load_for_prediction` builds the model from a checkpoint alone, without the training data. An image
file is prepared as the dataset's evaluation path prepares a sample: converted to the checkpoint's
channels (RGB, or grayscale for MNIST-like checkpoints), the short side resized and center-cropped
to the input size, scaled to [0, 1] and normalized.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from mlproj.data.image_folder import IMAGE_EXTENSIONS, is_image_file, load_image
from mlproj.errors import MLProjError
from mlproj.train.checkpoint import checkpoint_path, load_checkpoint, load_into
from mlproj.train.model import create_model
from mlproj.util.device import canonical_device
from mlproj.util.files import atomic_write
from mlproj.util.refs import CHECKPOINT_OF

if TYPE_CHECKING:
    from mlproj.data.factory import DatasetFactory

# Files read and predicted at once: bounds the memory a large folder takes.
CHUNK = 256


def dataset_info(factory: DatasetFactory) -> dict[str, Any] | None:
    """What a checkpoint keeps about its inputs: `input_shape`, `num_classes`, `class_names` (None
    when the dataset names none), and the `mean`/`std` inputs were normalized with (None when the
    factory does not say). None when the factory gives no input shape."""
    if factory.input_shape is None or factory.num_classes is None:
        return None
    names = getattr(factory, "class_names", None)
    normalization = _normalization(factory)
    return {
        "input_shape": [int(d) for d in factory.input_shape],
        "num_classes": int(factory.num_classes),
        "class_names": [str(n) for n in names] if names is not None else None,
        "mean": [float(m) for m in normalization[0]] if normalization else None,
        "std": [float(s) for s in normalization[1]] if normalization else None,
    }


def _normalization(factory: DatasetFactory) -> tuple[Any, Any] | None:
    """The (mean, std) the training samples are normalized with: the in-memory path's batch transform,
    or a torchvision `Normalize` among the training set's transforms."""
    train = factory.train_set()
    transform = getattr(train, "transform", None)
    if hasattr(transform, "mean") and hasattr(transform, "std"):  # the memory path's BatchTransform
        return tuple(transform.mean), tuple(transform.std)
    while hasattr(train, "dataset"):  # a Subset (the validation split was carved from it)
        train = train.dataset
    for step in getattr(getattr(train, "transform", None), "transforms", []):
        if type(step).__name__ == "Normalize":
            return tuple(step.mean), tuple(step.std)
    return None


# ---------------------------------------------------------------------------------------- predicting
def predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, num_classes) of a batch of model inputs (prepared as the loaders
    deliver them: normalized), computed in eval mode without gradients."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            logits = model(images.to(device))
    finally:
        model.train(was_training)
    return torch.softmax(logits.float(), dim=1).cpu()


def image_files(target: str | os.PathLike) -> list[str]:
    """`target` itself when it is a file, else every image file under the folder `target`, sorted."""
    target = os.fspath(target)
    if os.path.isfile(target):
        return [target]
    if not os.path.isdir(target):
        raise MLProjError(f"input {target} does not exist: pass an image file or a folder of images.")
    paths = []
    for root, dirs, files in os.walk(target):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        paths += [os.path.join(root, f) for f in sorted(files) if is_image_file(f)]
    if not paths:
        raise MLProjError(f"input {target} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)}): "
                          "pass a folder of images or one image file.")
    return paths


def prepare_image(path: str, info: dict[str, Any]) -> torch.Tensor:
    """One image file as a model input (C, H, W), prepared as the dataset's evaluation path does.

    Raises:
        MLProjError: when the file is unreadable, or a colour image for a grayscale checkpoint.
    """
    channels, height, width = info["input_shape"]
    if channels not in (1, 3) or height != width:
        raise MLProjError(f"this checkpoint takes inputs of shape {tuple(info['input_shape'])}, not images: "
                          "predict on tensors with .predict(inputs) instead.")
    pixels = load_image(path, height, "RGB")
    if channels == 1:
        spread = (pixels.max(dim=0).values.int() - pixels.min(dim=0).values.int()).float().mean()
        if spread > 8:  # well above JPEG's colour noise in a grey picture
            raise MLProjError(f"{path} is a colour image, but this checkpoint was trained on grayscale images "
                              f"of {height}x{width}: pass grayscale images.")
        pixels = load_image(path, height, "L")
    x = pixels.float().div_(255)
    if info.get("mean") is not None:
        x = (x - torch.tensor(info["mean"]).view(-1, 1, 1)) / torch.tensor(info["std"]).view(-1, 1, 1)
    return x


def predict_files(model: torch.nn.Module, info: dict[str, Any], paths: list[str], top_k: int = 3) -> list[dict[str, Any]]:
    """One row per image: `path`, `label` (the most likely class's name), `probability`, then
    `label_2`, `probability_2` ... up to `top_k` (capped at the number of classes)."""
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise MLProjError(f"top_k={top_k!r} is invalid: expected an integer >= 1.")
    names = info.get("class_names") or [str(i) for i in range(info["num_classes"])]
    k = min(top_k, len(names))
    rows = []
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start : start + CHUNK]
        probabilities = predict(model, torch.stack([prepare_image(p, info) for p in chunk]))
        values, indices = probabilities.topk(k, dim=1)
        for path, p, i in zip(chunk, values.tolist(), indices.tolist(), strict=True):
            row: dict[str, Any] = {"path": path, "label": names[i[0]], "probability": p[0]}
            for rank in range(1, k):
                row[f"label_{rank + 1}"], row[f"probability_{rank + 1}"] = names[i[rank]], p[rank]
            rows.append(row)
    return rows


def project_predict_files(project: Any, paths: str | os.PathLike | list[str], top_k: int = 3) -> list[dict[str, Any]]:
    """`MLProject.predict_files`: one row per image (`path`, `label`, `probability`, then the `top_k`
    classes) of `paths`, image files or folders of images (or one of either), through the project's
    model and its dataset's inputs."""
    targets = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = [path for target in targets for path in image_files(target)]
    info = dataset_info(project.dataset_factory)
    if info is None:
        raise MLProjError("this project's dataset factory gives no input_shape: predict on tensors with .predict(inputs).")
    return predict_files(project.model, info, files, top_k)


def write_csv(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write `predict_files` rows as CSV, atomically (probabilities with 6 decimals)."""
    def write(f: Any) -> None:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})

    try:
        atomic_write(path, write, mode="w")
    except OSError as err:
        raise MLProjError(f"cannot write {path} ({err.strerror}): pass output=<a file in a folder you can write>.") from None


# ---------------------------------------------------------------------------------------- from a checkpoint
def load_for_prediction(
    path: str | os.PathLike, device: str = "cpu", get_model: Callable[[dict[str, Any]], torch.nn.Module] | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode, its `dataset_info`) from a checkpoint file or run folder alone.

    The model is the built-in one of the recorded config (sized from the checkpoint, so no data is
    read), or `get_model(config)` for a project that builds its own (pass `Project.get_model`).

    Raises:
        MLProjError: when the checkpoint is unreadable, records no inputs, or does not fit the model.
    """
    path = checkpoint_path(path, CHECKPOINT_OF["predict"])
    checkpoint = load_checkpoint(path)
    info = checkpoint.get("data")
    if not info:
        raise MLProjError(f"checkpoint {path} records no description of its inputs (its dataset factory gives no "
                          "input_shape): load the run with mlproj.load_run and call .predict(inputs) on prepared tensors.")
    config = {**checkpoint.get("config", {}), "pretrained": None}  # the checkpoint holds the trained weights
    if get_model is None:
        model = create_model(config, input_shape=tuple(info["input_shape"]), num_classes=info["num_classes"])
    else:
        model = get_model(config)
    load_into(model, checkpoint, path, weights_only=True, fix="predict with the main file of the run that wrote it.")
    return model.to(canonical_device(device)).eval(), info
