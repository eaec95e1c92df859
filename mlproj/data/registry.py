"""Datasets by name: `register_dataset` adds one, `create_dataset_factory(config)` builds it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlproj.errors import MLProjError, invalid_config

if TYPE_CHECKING:  # the factory imports torch; registering a dataset must not (see datasets_cli)
    from .factory import DatasetFactory


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its builder and what its samples look like.

    `prepare(config)` runs before the run starts: it makes sure the files are there (downloading
    when allowed) and raises `MLProjError` saying where to put them otherwise, so a missing dataset
    costs no run folder.
    """

    name: str
    build: Callable[[dict[str, Any]], DatasetFactory]
    input_shape: tuple[int, int, int]
    num_classes: int
    prepare: Callable[[dict[str, Any]], None] | None = None
    # For datasets whose shape depends on the config or the files (image_folder): config ->
    # (input_shape, num_classes); `input_shape`/`num_classes` are then only what `mlproj datasets` shows.
    describe: Callable[[dict[str, Any]], tuple[tuple[int, int, int], int]] | None = None


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    prepare: Callable[[dict[str, Any]], None] | None = None,
    describe: Callable[[dict[str, Any]], tuple[tuple[int, int, int], int]] | None = None,
) -> Callable[[Callable[[dict[str, Any]], DatasetFactory]], Callable[[dict[str, Any]], DatasetFactory]]:
    """Register a function `config -> DatasetFactory` under `name` (then usable as `dataset=name`).

    Example:
        >>> @register_dataset("my_data", input_shape=(1, 28, 28), num_classes=10)
        ... def my_data(config):
        ...     return DatasetFactory(train_set=..., test_set=..., batch_size=config["batch_size"])
    """

    def decorator(build: Callable[[dict[str, Any]], DatasetFactory]) -> Callable[[dict[str, Any]], DatasetFactory]:
        _DATASETS[name] = DatasetSpec(name, build, tuple(input_shape), num_classes, prepare, describe)
        return build

    return decorator


def dataset_names() -> list[str]:
    return sorted(_DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec registered under `name`; `MLProjError` listing the known names otherwise."""
    if name not in _DATASETS:
        raise MLProjError(
            f"config dataset={name!r} is unknown: use one of {', '.join(dataset_names())}, "
            "or register your own with mlproj.data.register_dataset."
        )
    return _DATASETS[name]


def check_data_config(config: dict[str, Any]) -> None:
    """`MLProjError` unless config `dataset` names a registered dataset and the keys the built-in
    datasets read (`val_fraction`, `download`, `verify_checksums`) hold values they take."""
    if "dataset" in config:
        dataset_spec(config["dataset"])
    fraction = config.get("val_fraction", 0.1)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise invalid_config("val_fraction", fraction, "a number in [0, 1), e.g. val_fraction=0.1")
    for key in ("download", "verify_checksums"):
        if key in config and not isinstance(config[key], bool):
            raise invalid_config(key, config[key], "True or False")


def prepare_dataset(config: dict[str, Any]) -> None:
    """Make sure the files of config `dataset` are present (see `DatasetSpec.prepare`)."""
    check_data_config(config)
    spec = dataset_spec(config["dataset"])
    if spec.prepare is not None:
        spec.prepare(config)


def dataset_shape(config: dict[str, Any]) -> tuple[tuple[int, int, int], int]:
    """(input_shape, num_classes) of config `dataset` under this config (see `DatasetSpec.describe`)."""
    spec = dataset_spec(config["dataset"])
    if spec.describe is not None:
        return spec.describe(config)
    return spec.input_shape, spec.num_classes


def create_dataset_factory(config: dict[str, Any]) -> DatasetFactory:
    """Build the factory of config `dataset` from the config's data keys.

    Raises:
        MLProjError: on a value `check_data_config` refuses.
    """
    check_data_config(config)
    return dataset_spec(config["dataset"]).build(config)
