"""Precision, compilation and memory format: each trains on CPU and checkpoints stay plain."""

from __future__ import annotations

import pytest
import torch

from mlproj.errors import MLProjError
from mlproj.train.loop import MLProject


def train_digits(**config) -> MLProject:
    project = MLProject({"dataset": "digits", "model": "lenet", "n_global_iterations": 6, "log_iteration_scalars": 3,
                         "tensorboard_dir": None, "val_fraction": 0.1, **config})
    project.train()
    return project


def test_amp_bf16_trains_on_cpu_with_bf16_forward() -> None:
    project = train_digits(amp="bf16")
    with project.model.autocast():
        out = project.model.net(torch.zeros(2, 1, 8, 8))
    assert out.dtype == torch.bfloat16
    assert project.global_step == 6 and project.best_score is not None


def test_amp_fp16_has_a_grad_scaler_in_the_checkpoint() -> None:
    project = train_digits(amp="fp16")
    assert project.checkpoint()["scaler"] is not None


def test_channels_last_trains_with_channels_last_weights() -> None:
    project = train_digits(channels_last=True)
    conv = project.model.net.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert project.global_step == 6


@pytest.mark.slow
def test_compile_trains_and_keeps_plain_parameter_names() -> None:
    # Inductor compiles C++ for the CPU: about 30 s for the smallest net, hence the slow mark.
    project = train_digits(compile=True, model="mlp", n_global_iterations=2, val_fraction=0.0)
    assert project.global_step == 2 and project.best_score is not None
    assert all("_orig_mod" not in key for key in project.checkpoint()["model"])


@pytest.mark.parametrize(("key", "value"), [("amp", "fp8"), ("compile", "yes"), ("channels_last", 1), ("cudnn_benchmark", "on")])
def test_config_precision_keys_invalid_raise(key: str, value: object) -> None:
    with pytest.raises(MLProjError, match=f"config {key}="):
        MLProject({"dataset": "digits", "model": "lenet", "tensorboard_dir": None, key: value})


def test_config_cudnn_benchmark_with_deterministic_raises() -> None:
    with pytest.raises(MLProjError, match="cudnn_benchmark=True conflicts with deterministic=True"):
        MLProject({"dataset": "digits", "model": "lenet", "tensorboard_dir": None, "cudnn_benchmark": True,
                   "deterministic": True})


@pytest.mark.parametrize("on", [True, False])
def test_cudnn_benchmark_key_sets_cudnn_autotuning_for_training(on: bool) -> None:
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = not on
        train_digits(cudnn_benchmark=on, n_global_iterations=1)
        assert torch.backends.cudnn.benchmark is on
    finally:
        torch.backends.cudnn.benchmark = before
