"""`make bench` runs end to end (on a tiny fixture here; no speed is asserted), and start-up stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, _run_refs

from mlproj import bench


def test_bench_tiny_run_prints_every_figure_ends_with_the_ratio_and_leaves_no_ref(runs_dir, capsys: pytest.CaptureFixture) -> None:
    refs = _run_refs()
    assert bench.main(["--train", "640", "--test", "64", "--repeats", "1", "--startup-repeats", "1", "--data-seconds", "0.1",
                       "--images", "40"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    for prefix in ("machine:", "workload:", "(c) data path alone", "(d) image_folder", "(a) bare PyTorch loop", "(b) MLProject, tracked",
                   "(e) epoch end", "start-up:", "metrics.json:"):
        assert any(line.startswith(prefix) for line in lines), prefix
    assert lines[-1].startswith("tracked/bare = ")
    assert float(lines[-1].split("=")[1]) > 0
    assert not _run_refs() - refs  # its tracked runs lie in a deleted temporary folder: no pin may outlive them


def test_print_config_imports_no_torch_torchvision_tensorboard_sklearn_or_dataset_code() -> None:
    code = ("import runpy, sys; sys.argv = ['main.py', 'print_config']; runpy.run_path('main.py', run_name='__main__'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'tensorboard', 'sklearn') or m.startswith('mlproj.data')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_bench_runs_option_prints_listing_figures_for_both_kinds_of_run(capsys: pytest.CaptureFixture) -> None:
    assert bench.main(["--runs", "3", "--steps", "50"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("listing: 3 runs, train series of 50 steps")
    for line, label in zip(lines[1:], ("recorded by mlproj", "plain Sacred (no summaries)"), strict=True):
        assert line.startswith(f"mlproj runs, {label}")
        first, second = line.split("first")[1].split("second")
        assert float(first.split()[0]) > 0 and float(first.split()[2]) > 0  # seconds, MB


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU: the bench would run")
def test_bench_device_cuda_without_a_gpu_fails_with_one_line(capsys: pytest.CaptureFixture) -> None:
    assert bench.main(["--device", "cuda"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "needs a CUDA GPU" in captured.err and "make bench" in captured.err


@pytest.mark.parametrize("fast", [True, False], ids=["batches-on-device", "dataloader"])
def test_bench_gpu_lightning_leg_on_cpu_times_each_epoch(tmp_path, fast: bool) -> None:
    pytest.importorskip("lightning", reason="lightning is optional: the GPU bench skips its leg without it")
    import torch

    from mlproj.bench_gpu import lightning_epochs

    bench.write_mnist_fixture(tmp_path / "data", 256, 64)
    config = {"model": "lenet", "dataset": "mnist", "data_dir": str(tmp_path / "data"), "download": False, "val_fraction": 0.0,
              "batch_size": 64, "lr": 1e-3, "n_epochs": 2, "device": "cpu", "seed": 0}
    seconds = lightning_epochs(config, torch.device("cpu"), fast, sync=lambda: None)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)
