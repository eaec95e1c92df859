"""What `MLProject` builds, checks and prepares unless a subclass says otherwise.

`MLProject.get_dataset_factory`, `get_model` and `get_callbacks` are these functions, and its
`check_config` / `prepare_data` check and prepare only the keys of the built-ins a class still uses:
a subclass that overrides `get_model` owns `model`, `optimizer` and any key of its own.
Importing this module imports torch (the data factory, the model), not torchvision: the datasets and
`mlproj.nets` import torchvision only where they use it.
"""

from __future__ import annotations

from typing import Any

from mlproj.data import check_data_config, create_dataset_factory, prepare_dataset
from mlproj.data.factory import DatasetFactory
from mlproj.train.callbacks import Callback, EarlyStopping
from mlproj.train.config import validate_config
from mlproj.train.model import Model, check_model_config, create_model


def get_dataset_factory(config: dict[str, Any]) -> DatasetFactory:
    """The data of config `dataset` (override `get_dataset_factory` to bring your own)."""
    return create_dataset_factory(config)


def get_model(config: dict[str, Any]) -> Model:
    """The classifier of config `model` for config `dataset` (override `get_model` to bring your own)."""
    return create_model(config)


def get_callbacks(config: dict[str, Any]) -> list[Callback]:
    """The callbacks the config asks for: early stopping with `early_stopping_patience` (override
    `get_callbacks` to add yours; `MLProject.get_callbacks(config)` keeps these)."""
    patience = config.get("early_stopping_patience")
    return [EarlyStopping(patience)] if patience is not None else []


def check_config(cls: type, config: dict[str, Any]) -> None:
    """Raise `MLProjError` for a config value this project would refuse, before anything is loaded or written.

    Checks the machinery keys (`validate_config`), and the keys a built-in factory reads when
    this class uses it: `model`, `dataset` and the optimizer's for the built-in `get_model`,
    `dataset`, `val_fraction`, ... for the built-in `get_dataset_factory`. A subclass that
    overrides one of them owns its keys; to check them up front too, override this and call
    `super().check_config(config)`.
    """
    validate_config(config)
    if cls.get_model is get_model:
        check_model_config(config)
    if cls.get_dataset_factory is get_dataset_factory:
        check_data_config(config)


def prepare_data(cls: type, config: dict[str, Any]) -> None:
    """Make sure the data exist before a run starts (downloading when config `download` allows).

    The built-in `get_dataset_factory` checks the files of config `dataset` and raises
    `MLProjError` saying where to put them; a subclass with its own factory prepares nothing
    here unless it overrides this too.
    """
    if cls.get_dataset_factory is get_dataset_factory and "dataset" in config:
        prepare_dataset(config)
