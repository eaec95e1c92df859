"""Checkpoint files: atomic writes, and a safe loader that names the file it refuses."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from mlproj.errors import MLProjError
from mlproj.train.checkpoint import FORMAT, atomic_save, load_checkpoint


def small_checkpoint() -> dict:
    return {"format": FORMAT, "model": {"w": torch.arange(6.0).reshape(2, 3)}, "state": {"epoch": 1}, "run": {"git": None}}


def test_atomic_save_roundtrip_loads_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    atomic_save(small_checkpoint(), path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(6.0).reshape(2, 3))
    assert loaded["state"] == {"epoch": 1} and loaded["run"] == {"git": None}
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_atomic_save_failure_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    atomic_save(small_checkpoint(), path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for an unpicklable object
        atomic_save({"format": FORMAT, "bad": lambda: None}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]


def test_load_checkpoint_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(MLProjError, match=r"nowhere\.pt does not exist"):
        load_checkpoint(tmp_path / "nowhere.pt")


def test_load_checkpoint_truncated_file_raises_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    atomic_save(small_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MLProjError, match=rf"checkpoint {path} is truncated or corrupt"):
        load_checkpoint(path)


def test_load_checkpoint_garbage_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    path.write_text("not a checkpoint at all\n")
    with pytest.raises(MLProjError, match=rf"checkpoint {path} (is truncated or corrupt|was refused)"):
        load_checkpoint(path)


def test_load_checkpoint_foreign_torch_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)  # a plain state dict from somewhere else
    with pytest.raises(MLProjError, match=rf"checkpoint {path} is not an mlproj checkpoint"):
        load_checkpoint(path)


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_load_checkpoint_code_running_pickle_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "last.pt"
    torch.save({"format": FORMAT, "payload": RunsCode(marker)}, path)
    with pytest.raises(MLProjError, match=rf"checkpoint {path} was refused by the safe loader"):
        load_checkpoint(path)
    assert not marker.exists()
    # The same file unpickled unsafely would have run the code: the test's payload is real.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_checkpoint_raw_pickle_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "old.pt"
    path.write_bytes(pickle.dumps(RunsCode(marker)))  # the legacy (non-zip) format
    with pytest.raises(MLProjError, match=rf"checkpoint {path}"):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_path_run_folder_best_then_last_else_one_line(tmp_path: Path) -> None:
    from mlproj.train.checkpoint import checkpoint_path as checkpoint_file

    run = tmp_path / "4"
    run.mkdir()
    with pytest.raises(MLProjError) as err:
        load_checkpoint(run)
    assert str(err.value) == (f"checkpoint {run} is a folder without best.pt or last.pt: pass the folder of a training run "
                              "(a `test` run saves no checkpoint) or the path of a .pt file.")
    atomic_save(small_checkpoint(), run / "last.pt")
    assert checkpoint_file(run) == str(run / "last.pt")
    atomic_save({**small_checkpoint(), "state": {"epoch": 2}}, run / "best.pt")
    assert checkpoint_file(run) == str(run / "best.pt")
    assert load_checkpoint(run)["state"] == {"epoch": 2}


def test_write_checkpoint_best_is_the_file_just_written_not_a_second_serialization(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from mlproj.train import checkpoint

    saves = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (saves.append(1), real_save(obj, f, *a, **k)))
    checkpoint.write_checkpoint({"format": FORMAT, "step": 1}, str(tmp_path), best=True, step=1, fix="")
    assert len(saves) == 1
    assert os.path.samefile(tmp_path / "last.pt", tmp_path / "best.pt")
    checkpoint.write_checkpoint({"format": FORMAT, "step": 2}, str(tmp_path), best=False, step=2, fix="")
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 1  # a new last.pt replaces, never rewrites, the shared file
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_checkpoint_path_resume_takes_last_test_takes_best_by_folder_or_id(tmp_path: Path) -> None:
    from mlproj.train.checkpoint import checkpoint_path
    from mlproj.util.refs import CHECKPOINT_OF

    run = tmp_path / "4"
    run.mkdir()
    atomic_save(small_checkpoint(), run / "last.pt")
    atomic_save(small_checkpoint(), run / "best.pt")
    for ref in (run, "4"):
        assert checkpoint_path(ref, CHECKPOINT_OF["resume"], str(tmp_path)) == str(run / "last.pt")
        assert checkpoint_path(ref, CHECKPOINT_OF["test"], str(tmp_path)) == str(run / "best.pt")
    with pytest.raises(MLProjError, match="resume='5' names no checkpoint"):
        checkpoint_path("5", CHECKPOINT_OF["resume"], str(tmp_path))


def test_load_into_weights_saved_under_ddp_fit_a_plain_model_and_misfit_is_one_line() -> None:
    from mlproj.train.checkpoint import load_into

    saved = torch.nn.Sequential(torch.nn.Linear(3, 2))
    wrapped = {f"module.{key}": value for key, value in saved.state_dict().items()}  # as DDP names them
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    load_into(model, {"model": wrapped}, "x.pt", weights_only=True, fix="predict with its main file.")
    assert torch.equal(model[0].weight, saved[0].weight)
    with pytest.raises(MLProjError, match=r"^checkpoint y.pt does not fit this model \(.*\): predict with its main file\.$"):
        load_into(torch.nn.Sequential(torch.nn.Linear(4, 2)), {"model": wrapped}, "y.pt", weights_only=True, fix="predict with its main file.")
