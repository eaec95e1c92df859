"""Storage faults: an unwritable runs dir or model_dir fails before training; a failing checkpoint
write keeps the previous good checkpoint and ends the run FAILED with the reason in one line.

main.py's experiment runs in this process (a run is a few hundred milliseconds once torch is
imported); the disk-full case injects ENOSPC into the checkpoint write.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import main_experiment

from mlproj.errors import MLProjError
from mlproj.train.checkpoint import load_checkpoint
from mlproj.util.files import check_writable

TRAIN = ["with", "dataset=digits", "model=mlp", "tensorboard_dir=None"]


def run_main_in_process(*args: str) -> int:
    try:
        main_experiment().run_commandline(["main.py", *args])
    except SystemExit as exit_:
        return int(exit_.code)
    return 0


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("WARNING - root", "epoch "))]
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


def test_check_writable_missing_folder_under_writable_parent_passes_and_creates_nothing(tmp_path: Path) -> None:
    check_writable(str(tmp_path / "a" / "b"), "runs dir", "fix")
    assert list(tmp_path.iterdir()) == []


def test_check_writable_folder_under_a_file_raises(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(MLProjError, match=r"runs dir .*/file/runs cannot be created: .*/file is a file"):
        check_writable(str(tmp_path / "file" / "runs"), "runs dir", "fix")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_writable_read_only_folder_raises(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(MLProjError, match=r"is not writable \(EACCES"):
        check_writable(str(tmp_path / "ro" / "runs"), "runs dir", "fix")


def test_main_unwritable_runs_dir_fails_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MLPROJ_RUNS_DIR", str(tmp_path / "file" / "runs"))
    assert run_main_in_process(*TRAIN) == 1
    out, err = capsys.readouterr()
    assert "runs dir" in one_error_line(err) and "Set MLPROJ_RUNS_DIR" in err
    assert "Training" not in out


def test_main_unwritable_model_dir_fails_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MLPROJ_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "file").write_text("")
    assert run_main_in_process(*TRAIN, f"model_dir={tmp_path / 'file' / 'models'}") == 1
    line = one_error_line(capsys.readouterr().err)
    assert "config model_dir" in line and "Pass model_dir=<a folder you can write>" in line
    assert not (tmp_path / "runs").exists()


def test_main_disk_full_at_checkpoint_keeps_previous_and_ends_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MLPROJ_RUNS_DIR", str(tmp_path / "runs"))
    real_save, calls = torch.save, []

    def save_until_disk_full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) < 3:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"half a checkpoint")  # what a full disk leaves: a partial temp file, then ENOSPC
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save_until_disk_full)
    assert run_main_in_process(*TRAIN, "n_global_iterations=12", "save_iterations=4") == 1
    line = one_error_line(capsys.readouterr().err)
    run_dir = tmp_path / "runs" / "1"
    assert f"writing checkpoint {run_dir / 'last.pt'} failed at step 12 (ENOSPC: No space left on device)" in line
    assert "the previous checkpoint is kept" in line and f"resume={run_dir}" in line
    assert load_checkpoint(run_dir / "last.pt")["state"]["global_step"] == 8  # the last good one
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "FAILED"
    assert "ENOSPC" in run["fail_trace"][-1]
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp")]  # no partial file left


def test_main_disk_full_at_an_epoch_checkpoint_written_behind_keeps_previous_and_ends_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MLPROJ_RUNS_DIR", str(tmp_path / "runs"))
    real_save, calls = torch.save, []

    def save_until_disk_full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:  # called in the writer thread
        calls.append(1)
        if len(calls) < 2:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save_until_disk_full)
    assert run_main_in_process(*TRAIN, "n_epochs=3", "batch_size=512") == 1  # 3 steps an epoch, saved at its end
    line = one_error_line(capsys.readouterr().err)
    run_dir = tmp_path / "runs" / "1"
    assert f"writing checkpoint {run_dir / 'last.pt'} failed at step 6 (ENOSPC: No space left on device)" in line
    assert load_checkpoint(run_dir / "last.pt")["state"]["global_step"] == 3  # the first epoch's
    assert json.loads((run_dir / "run.json").read_text())["status"] == "FAILED"
    assert len(calls) == 2  # the failure, reported at the next save, stopped the run there
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp")]
