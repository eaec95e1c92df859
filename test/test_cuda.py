"""On a GPU: every CUDA spelling, the memory path, precision, memory format, compilation and
torchrun jobs of 1 and 2 processes. Marked `cuda` (`pytest -m cuda` runs only these) and skipped without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_cifar

from mlproj.train.loop import MLProject

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def train_cifar(root: Path, **config) -> MLProject:
    make_cifar(root)
    project = MLProject({"dataset": "cifar10", "data_dir": str(root), "model": "lenet", "verify_checksums": False,
                         "batch_size": 16, "n_global_iterations": 6, "log_iteration_scalars": 3,
                         "tensorboard_dir": None, **config})
    project.train()
    return project


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "auto"])
def test_cuda_memory_path_every_spelling_trains_on_gpu_0(tmp_path: Path, device: str) -> None:
    project = train_cifar(tmp_path, device=device)
    assert project.global_step == 6
    assert next(project.model.parameters()).device == torch.device("cuda", 0)
    assert project.dataset_factory.train_loader().device == torch.device("cuda", 0)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_trains_with_low_precision_forward(tmp_path: Path, amp: str) -> None:
    project = train_cifar(tmp_path, device="cuda", amp=amp)
    with project.model.autocast():
        out = project.model.net(torch.zeros(2, 3, 32, 32, device="cuda"))
    assert out.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert project.best_score is not None


def test_cuda_channels_last_trains_with_channels_last_weights(tmp_path: Path) -> None:
    project = train_cifar(tmp_path, device="cuda", channels_last=True)
    assert project.model.net.features[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_cuda_host_copy_is_a_host_snapshot_that_later_steps_do_not_change() -> None:
    from mlproj.train.checkpoint import host_copy

    weights = torch.arange(1000.0, device="cuda")
    snapshot = host_copy({"model": {"w": weights}})
    weights.add_(1.0)  # the next step, queued right after the copies were started
    assert snapshot["model"]["w"].device.type == "cpu"
    assert torch.equal(snapshot["model"]["w"], torch.arange(1000.0))


def test_cuda_epoch_checkpoints_written_behind_load_on_the_cpu(tmp_path: Path) -> None:
    from mlproj.train.checkpoint import load_checkpoint

    project = train_cifar(tmp_path, device="cuda", n_global_iterations=None, n_epochs=2, model_dir=str(tmp_path / "ck"))
    checkpoint = load_checkpoint(os.path.join(project.checkpoint_dir, "last.pt"), map_location=None)  # host copies
    assert checkpoint["state"]["epoch"] == 2
    assert all(value.device.type == "cpu" for value in checkpoint["model"].values())


def test_cuda_compile_trains_and_keeps_plain_parameter_names(tmp_path: Path) -> None:
    project = train_cifar(tmp_path, device="cuda", compile=True)
    assert project.global_step == 6
    assert all("_orig_mod" not in key for key in project.checkpoint()["model"])


@pytest.mark.parametrize(("nproc", "device"), [(1, "cuda"), (1, "cuda:0"), (1, "auto"), (2, "cuda"), (2, "cuda:0"), (2, "auto")])
def test_cuda_torchrun_every_spelling_nccl_completes_one_run(tmp_path: Path, nproc: int, device: str) -> None:
    # One process under torchrun with device=cuda crashed at the first batch (issue 20). Under
    # several processes every spelling means each rank's own GPU, cuda:N included (LOCAL_RANK's).
    if torch.cuda.device_count() < nproc:
        pytest.skip(f"needs {nproc} GPUs")
    runs = tmp_path / "runs"
    env = {**os.environ, "MLPROJ_RUNS_DIR": str(runs)}
    env.pop("MONGODB_URI", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(ROOT / "main.py"),
               "with", "dataset=digits", "model=mlp", "n_epochs=1", f"device={device}", "git_pin=False"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in runs.iterdir() if p.name.isdigit()] == ["1"]
    assert json.loads((runs / "1" / "run.json").read_text())["status"] == "COMPLETED"
