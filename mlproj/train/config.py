"""The configuration: the machinery defaults and the checks run before anything is loaded or written.

`main.py` holds the experiment's own keys (dataset, model, lr, ...) in its Sacred config scope; the
keys here are the training machinery every project shares. `MLProject` fills them in under any
config dict, so a config written for the original template (batch_size, n_global_iterations,
device, model_dir) still runs.
"""

from __future__ import annotations

import os
from typing import Any

from mlproj.errors import MLProjError

# key: (default, meaning). The README's config table mirrors this.
MACHINERY: dict[str, tuple[Any, str]] = {
    # Read by every dataset factory; here so that a config scope without them still runs.
    "batch_size": (64, "samples per batch (per process under torchrun)"),
    "data_dir": ("datasets", "the data root (env `DATA_DIR`)"),
    "device": ("auto", "`auto` (cuda:0 if available, else cpu), `cpu`, `cuda`, `cuda:N`"),
    "num_workers": (0, "DataLoader worker processes"),
    "n_epochs": (10, "epochs to train"),
    "n_global_iterations": (None, "optimizer steps to train; wins over n_epochs when given"),
    "model_dir": (None, "where checkpoints go; None = the run's folder (none with -u)"),
    "tensorboard_dir": ("auto", "TensorBoard root, one sub-folder per run; `auto` = tensorboard/ in the runs dir "
                                "(none with -u); None = off"),
    "log_iteration_scalars": (10, "log train scalars every N steps"),
    "log_iteration_all": ("epoch", "log images and histograms every N steps, or each `epoch`"),
    "save_iterations": ("epoch", "write last.pt every N steps, or each `epoch`"),
    "prefix": ("", "prepended to every metric name (e.g. `mnist.`)"),
    "resume": (None, "continue a run (its folder, its id in the runs dir, or a checkpoint path) with its recorded config"),
    "deterministic": (False, "use torch's deterministic algorithms"),
    "git_pin": (True, "commit the working tree under refs/mlproj/runs/<run key> at run start"),
    "data_backend": ("memory", "`memory` (uint8 tensors, batched transforms on the device) or `torchvision`"),
    "amp": ("off", "mixed precision: `off`, `bf16` or `fp16` (with a GradScaler)"),
    "compile": (False, "torch.compile the network (first steps are slow while it compiles)"),
    "channels_last": (False, "channels-last memory format for conv nets (faster on GPUs with AMP)"),
    "early_stopping_patience": (None, "stop after N evaluations without improvement of the benchmark metric; None = off"),
}


def runs_dir() -> str:
    """The default runs folder: `$MLPROJ_RUNS_DIR`, else `runs`."""
    return os.environ.get("MLPROJ_RUNS_DIR") or "runs"


def machinery_defaults() -> dict[str, Any]:
    """The machinery keys with their defaults, the environment-dependent ones resolved now."""
    defaults = {key: default for key, (default, _) in MACHINERY.items()}
    defaults["data_dir"] = os.environ.get("DATA_DIR", "datasets")
    return defaults


def tensorboard_root(value: Any, runs_root: str | None) -> str | None:
    """The TensorBoard root config `tensorboard_dir` names: `auto` is `tensorboard/` in
    `runs_root` (the folder the run is recorded in; None when it records nothing), and None,
    False or "" turn TensorBoard off."""
    if value == "auto":
        return os.path.join(runs_root, "tensorboard") if runs_root else None
    return str(value) if value else None


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` with every machinery key present."""
    return {**machinery_defaults(), **config}


def _fail(key: str, value: Any, expected: str) -> MLProjError:
    return MLProjError(f"config {key}={value!r} is invalid: expected {expected}. Run with {key}=<value> to fix it.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive_int(config: dict, key: str, *, allow_none: bool = False, allow_epoch: bool = False) -> None:
    if key not in config:
        return
    value = config[key]
    if value is None and allow_none:
        return
    if allow_epoch and value == "epoch":
        return
    if not _is_int(value) or value < 1:
        expected = "an integer >= 1" + (" or 'epoch'" if allow_epoch else "") + (" or None" if allow_none else "")
        raise _fail(key, value, expected)


def validate_config(config: dict[str, Any]) -> None:
    """Check every known key's type and range; raise `MLProjError` naming the first bad one.

    Runs before data are loaded or a run folder is made, so a typo costs nothing.
    """
    for key in ("n_epochs", "batch_size"):
        _check_positive_int(config, key)
    _check_positive_int(config, "n_global_iterations", allow_none=True)
    _check_positive_int(config, "log_iteration_scalars")
    _check_positive_int(config, "log_iteration_all", allow_epoch=True)
    _check_positive_int(config, "save_iterations", allow_epoch=True)
    _check_positive_int(config, "early_stopping_patience", allow_none=True)
    if "num_workers" in config and (not _is_int(config["num_workers"]) or config["num_workers"] < 0):
        raise _fail("num_workers", config["num_workers"], "an integer >= 0")
    if "lr" in config:
        lr = config["lr"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise _fail("lr", lr, "a number > 0, e.g. lr=0.001")
    if "weight_decay" in config:
        wd = config["weight_decay"]
        if isinstance(wd, bool) or not isinstance(wd, (int, float)) or wd < 0:
            raise _fail("weight_decay", wd, "a number >= 0")
    if "val_fraction" in config:
        vf = config["val_fraction"]
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 <= vf < 1:
            raise _fail("val_fraction", vf, "a number in [0, 1), e.g. val_fraction=0.1")
    if "optimizer" in config and config["optimizer"] not in ("adam", "sgd"):
        raise _fail("optimizer", config["optimizer"], "'adam' or 'sgd'")
    for key, allowed in (("data_backend", ("memory", "torchvision")), ("amp", ("off", "bf16", "fp16"))):
        if key in config and config[key] not in allowed:
            raise _fail(key, config[key], " or ".join(repr(a) for a in allowed))
    for key in ("download", "verify_checksums", "deterministic", "git_pin", "compile", "channels_last"):
        if key in config and not isinstance(config[key], bool):
            raise _fail(key, config[key], "True or False")
    for key in ("data_dir",):
        if key in config and not isinstance(config[key], str):
            raise _fail(key, config[key], "a folder path")
    if "device" in config:
        check_device(config["device"])


def check_device(device: Any) -> None:
    """Raise `MLProjError` unless `device` names a device this machine has."""
    if not isinstance(device, str):
        raise _fail("device", device, "'auto', 'cpu' or 'cuda:N'")
    if device in ("auto", "cpu"):
        return
    if device == "cuda" or device.startswith("cuda:"):
        import torch

        index = device.partition(":")[2]
        if index and not index.isdigit():
            raise _fail("device", device, "'cuda' or 'cuda:N' with N a GPU index")
        if not torch.cuda.is_available():
            raise MLProjError(
                f"config device={device!r} asks for CUDA, but this machine has no usable GPU: "
                "run with device=cpu or device=auto."
            )
        if index and int(index) >= torch.cuda.device_count():
            raise MLProjError(
                f"config device={device!r} names GPU {index}, but this machine has "
                f"{torch.cuda.device_count()}: use device=cuda:0 .. cuda:{torch.cuda.device_count() - 1}."
            )
        return
    raise _fail("device", device, "'auto', 'cpu' or 'cuda:N'")
