"""User mistakes on main.py's command line: one line naming the input and the fix, exit 1,
no traceback, and nothing written (the checks run before a run folder exists)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_mnist, run_main

CASES = [
    # (arguments after main.py, a pattern the one line must contain)
    (["with", "dataset=imagenet"], "dataset='imagenet' is unknown: use one of"),
    (["with", "model=vgg"], "model='vgg' is invalid: expected one of lenet, mlp, resnet18"),
    (["with", "dataset=digits", "n_epochs=0"], "n_epochs=0 is invalid: expected an integer >= 1"),
    (["with", "dataset=digits", "n_epochs=1.5"], "n_epochs=1.5 is invalid"),
    (["with", "dataset=digits", "batch_size=0"], "batch_size=0 is invalid"),
    (["with", "dataset=digits", "lr=0"], "lr=0 is invalid: expected a number > 0"),
    (["with", "dataset=digits", "lr=-0.1"], "lr=-0.1 is invalid"),
    (["with", "dataset=digits", "val_fraction=1.0"], r"val_fraction=1.0 is invalid: expected a number in \[0, 1\)"),
    (["with", "dataset=digits", "optimizer=rmsprop"], "optimizer='rmsprop' is invalid: expected 'adam' or 'sgd'"),
    (["with", "dataset=digits", "num_workers=-1"], "num_workers=-1 is invalid"),
    (["with", "dataset=digits", "save_iterations=0"], "save_iterations=0 is invalid: expected an integer >= 1 or 'epoch'"),
    (["with", "dataset=digits", "log_iteration_scalars=never"], "log_iteration_scalars='never' is invalid"),
    (["with", "dataset=digits", "device=tpu"], "device='tpu' is invalid"),
    (["with", "dataset=digits", "n_epoch=3"], "unknown config key n_epoch: check the spelling"),
    (["with", "dataset=digits", "lr"], "`with lr` is neither key=value nor a named config"),
    (["train_fast"], 'Command "train_fast" not found'),
    (["with", "dataset=mnist", "download=False"], r"MNIST not found under .*/MNIST/raw .*and download=False"),
    (["with", "dataset=cifar10", "download=False"], r"CIFAR10 not found under .*cifar-10-batches-py"),
    (["with", "dataset=digits", "resume=77"], r"resume='77' names no checkpoint"),
    (["test", "with", "dataset=digits", "checkpoint=nowhere.pt"], "checkpoint nowhere.pt does not exist"),
]
if not torch.cuda.is_available():
    CASES.append((["with", "dataset=digits", "device=cuda:0"], "asks for CUDA, but this machine has no usable GPU: run with device=cpu"))


@pytest.mark.parametrize(("args", "pattern"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_main_bad_input_one_line_exit_1_nothing_written(args: list[str], pattern: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = run_main(*args, f"data_dir={tmp_path / 'data'}" if "with" in args else "", runs=runs) if "with" in args \
        else run_main(*args, runs=runs)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert lines and lines[-1].startswith("error: ")
    assert len(lines) <= 2, result.stderr  # the error, at most after Sacred's own type-change warning
    import re

    assert re.search(pattern, lines[-1]), lines[-1]
    assert not runs.exists()  # no run folder, no TensorBoard directory, nothing


def test_main_corrupt_idx_file_named_before_run(tmp_path: Path) -> None:
    data = make_mnist(tmp_path / "data")
    (data / "MNIST" / "raw" / "train-labels-idx1-ubyte").write_bytes(b"garbage")
    result = run_main("with", "dataset=mnist", f"data_dir={data}", "download=False", runs=tmp_path / "runs")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "train-labels-idx1-ubyte is not an IDX file" in result.stderr
    assert not (tmp_path / "runs").exists()
