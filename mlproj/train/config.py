"""The configuration: the machinery defaults and the checks run before anything is loaded or written.

`main.py` holds the experiment's own keys (dataset, model, lr, ...) in its Sacred config scope; the
keys here are the training machinery every project shares, and the only ones `validate_config`
checks. The experiment's own keys belong to whatever reads them: the built-in model and dataset
factories check theirs when they are used (and `MLProject.check_config` before a run starts). `MLProject` fills them in under any
config dict, so a config written for the original template (batch_size, n_global_iterations,
device, model_dir) still runs.
"""

from __future__ import annotations

import os
from typing import Any

from mlproj.errors import MLProjError, invalid_config

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
    "compile": (False, "torch.compile the network with static shapes (first steps are slow while it compiles)"),
    "cudnn_benchmark": (False, "let cuDNN time its convolution algorithms on the first batches of each shape (off, as in "
                               "Lightning: the autotuning costs seconds and its gain was within noise)"),
    "channels_last": (False, "channels-last memory format for conv nets (faster on GPUs with AMP)"),
    "accumulate_grad_batches": (1, "batches whose gradients add up to one optimizer step (an epoch's last group may be "
                                   "shorter); steps are counted in optimizer steps"),
    "grad_clip_norm": (None, "clip the gradients' total norm to this before each optimizer step; None = off"),
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
        raise invalid_config(key, value, expected)


def validate_config(config: dict[str, Any]) -> None:
    """Check the type and range of every machinery key in `config`; raise `MLProjError` naming the first bad one.

    Runs before data are loaded or a run folder is made, so a typo costs nothing. Keys mlproj does
    not own (the model's, the optimizer's, the data's, any the user adds) are left to the code
    that reads them.
    """
    for key in ("n_epochs", "batch_size"):
        _check_positive_int(config, key)
    _check_positive_int(config, "n_global_iterations", allow_none=True)
    _check_positive_int(config, "log_iteration_scalars")
    _check_positive_int(config, "log_iteration_all", allow_epoch=True)
    _check_positive_int(config, "save_iterations", allow_epoch=True)
    _check_positive_int(config, "accumulate_grad_batches")
    clip = config.get("grad_clip_norm")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
        raise invalid_config("grad_clip_norm", clip, "a number > 0 or None")
    _check_positive_int(config, "early_stopping_patience", allow_none=True)
    if "num_workers" in config and (not _is_int(config["num_workers"]) or config["num_workers"] < 0):
        raise invalid_config("num_workers", config["num_workers"], "an integer >= 0")
    for key, allowed in (("data_backend", ("memory", "torchvision")), ("amp", ("off", "bf16", "fp16"))):
        if key in config and config[key] not in allowed:
            raise invalid_config(key, config[key], " or ".join(repr(a) for a in allowed))
    for key in ("deterministic", "git_pin", "compile", "channels_last", "cudnn_benchmark"):
        if key in config and not isinstance(config[key], bool):
            raise invalid_config(key, config[key], "True or False")
    if config.get("cudnn_benchmark") is True and config.get("deterministic") is True:
        raise MLProjError("config cudnn_benchmark=True conflicts with deterministic=True (autotuning picks "
                          "algorithms run by run): drop one of them.")
    if "data_dir" in config and not isinstance(config["data_dir"], str):
        raise invalid_config("data_dir", config["data_dir"], "a folder path")
    if "device" in config:
        check_device(config["device"])


def check_number(config: dict[str, Any], key: str, *, low: float, low_inclusive: bool, high: float | None = None,
                 expected: str) -> None:
    """`MLProjError` unless config `key` (when present) is a number in the range from `low` to `high` (exclusive)."""
    if key not in config:
        return
    value = config[key]
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not (value >= low if low_inclusive else value > low) or (high is not None and not value < high):
        raise invalid_config(key, value, expected)


def check_device(device: Any) -> None:
    """Raise `MLProjError` unless `device` names a device this machine has."""
    if not isinstance(device, str):
        raise invalid_config("device", device, "'auto', 'cpu' or 'cuda:N'")
    if device in ("auto", "cpu"):
        return
    if device == "cuda" or device.startswith("cuda:"):
        import torch  # lazy: print_config and every mlproj command import this module; only CUDA names ask torch

        index = device.partition(":")[2]
        if index and not index.isdigit():
            raise invalid_config("device", device, "'cuda' or 'cuda:N' with N a GPU index")
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
    raise invalid_config("device", device, "'auto', 'cpu' or 'cuda:N'")
