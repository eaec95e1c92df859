"""Checkpoint files: atomic writes, and a safe loader that names the file it refuses."""

from __future__ import annotations

import collections
import os
import pickle
import threading
from pathlib import Path

import pytest
import torch

from mlproj.errors import MLProjError
from mlproj.train.checkpoint import FORMAT, RunCheckpoints, atomic_save, load_checkpoint
from mlproj.train.context import RunContext, RunSink
from mlproj.train.tracker import Tracker


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


def test_host_copy_source_changed_after_the_snapshot_leaves_it_and_keeps_state_dict_metadata() -> None:
    from mlproj.train.checkpoint import host_copy

    net = torch.nn.BatchNorm1d(3)
    source = {"model": net.state_dict(), "lists": [torch.ones(2)], "step": 4}
    snapshot = host_copy(source)
    with torch.no_grad():
        net.weight.add_(1.0)  # training goes on changing the parameters in place
    source["lists"][0].zero_()
    source["lists"].append("later")
    assert torch.equal(snapshot["model"]["weight"], torch.ones(3))
    assert torch.equal(snapshot["lists"][0], torch.ones(2)) and len(snapshot["lists"]) == 1
    assert snapshot["model"]._metadata == source["model"]._metadata  # the module versions load_state_dict reads


class ArtifactSink(RunSink):
    def __init__(self) -> None:
        self.artifacts: list[str] = []

    def add_artifact(self, path: str, name: str) -> None:
        self.artifacts.append(name)


class HeldWrite:
    """Pickles (as an empty OrderedDict) only once `release` is set: a write held in flight."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def __reduce__(self) -> tuple:
        self.started.set()
        assert self.release.wait(30)
        return collections.OrderedDict, ()


def run_checkpoints(folder: Path) -> tuple[RunCheckpoints, ArtifactSink]:
    sink = ArtifactSink()
    context = RunContext(run_key="k", checkpoint_dir=str(folder), sink=sink)
    return RunCheckpoints(context, Tracker(sink), writes=True), sink


def test_run_checkpoints_background_save_returns_during_its_write_and_flush_completes_and_records_it(tmp_path: Path) -> None:
    checkpoints, sink = run_checkpoints(tmp_path)
    held = HeldWrite()
    with checkpoints.writing(background=True):
        checkpoints.save(lambda: {**small_checkpoint(), "state": {"epoch": 1}}, best=False, step=1)
        path = checkpoints.save(lambda: {**small_checkpoint(), "state": {"epoch": 2}, "held": held}, best=True, step=2)
        assert held.started.wait(30)  # serializing in the writer thread, while this one goes on
        assert load_checkpoint(path)["state"] == {"epoch": 1} and not (tmp_path / "best.pt").exists()
        assert sink.artifacts == ["last.pt"]  # the first write's, recorded when the second save waited for it
        held.release.set()
        checkpoints.flush()
        assert load_checkpoint(path)["state"] == {"epoch": 2} and os.path.samefile(path, tmp_path / "best.pt")
        assert sink.artifacts == ["last.pt", "last.pt", "best.pt"]


def test_run_checkpoints_failed_background_write_raises_one_line_at_the_next_save(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    checkpoints, _ = run_checkpoints(folder)
    with pytest.raises(MLProjError) as err, checkpoints.writing(background=True):
        folder.write_text("a file where the folder was")  # a write that cannot succeed
        checkpoints.save(small_checkpoint, best=False, step=3)  # returns: the write fails in the thread
        checkpoints.save(small_checkpoint, best=False, step=6)
    assert str(err.value).startswith(f"writing checkpoint {folder / 'last.pt'} failed at step 3 (")
    assert "\n" not in str(err.value)


def test_run_checkpoints_writing_body_raising_still_waits_for_the_write_and_reports_its_failure(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoints, sink = run_checkpoints(tmp_path / "ok")
    with pytest.raises(ZeroDivisionError), checkpoints.writing(background=True):
        checkpoints.save(small_checkpoint, best=False, step=3)
        1 / 0  # noqa: B018 - training fails after the save
    assert load_checkpoint(tmp_path / "ok" / "last.pt")["state"] == small_checkpoint()["state"]
    assert sink.artifacts == ["last.pt"]

    folder = tmp_path / "failing"
    checkpoints, _ = run_checkpoints(folder)
    folder.write_text("a file where the folder was")
    with pytest.raises(ZeroDivisionError), checkpoints.writing(background=True):
        checkpoints.save(small_checkpoint, best=False, step=3)
        1 / 0  # noqa: B018
    (line,) = capsys.readouterr().err.splitlines()  # the training error goes on; the failed write gets its line
    assert line.startswith(f"error: writing checkpoint {folder / 'last.pt'} failed at step 3 (")


def test_run_checkpoints_flush_interrupted_while_a_failing_write_runs_still_reports_that_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import errno
    import signal

    from mlproj.train import checkpoint

    flushing, interrupted = threading.Event(), threading.Event()

    def full_disk(obj, path):  # fails only once the flush waiting for it was interrupted
        assert flushing.wait(30)
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupted.wait(30)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def second_ctrl_c(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "atomic_save", full_disk)
    checkpoints, sink = run_checkpoints(tmp_path)
    before = signal.signal(signal.SIGINT, second_ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt), checkpoints.writing(background=True):
            checkpoints.save(small_checkpoint, best=False, step=3)
            flushing.set()
            checkpoints.flush()  # interrupted while it waits
    finally:
        signal.signal(signal.SIGINT, before)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: writing checkpoint {tmp_path / 'last.pt'} failed at step 3 (")
    assert "space" in line and sink.artifacts == []


def test_run_checkpoints_writing_body_mistake_and_failed_write_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "checkpoints"
    checkpoints, _ = run_checkpoints(folder)
    folder.write_text("a file where the folder was")
    with pytest.raises(MLProjError) as err, checkpoints.writing(background=True):
        checkpoints.save(small_checkpoint, best=False, step=3)
        raise MLProjError("config lr=x is not a number: pass lr=0.1.")
    assert capsys.readouterr().err == ""  # the command line prints the one error it is given
    message = str(err.value)
    assert message.startswith("config lr=x is not a number: pass lr=0.1. Also: writing checkpoint ")
    assert f"{folder / 'last.pt'} failed at step 3 (" in message and "\n" not in message


def test_host_copy_tied_weights_stay_one_tensor_in_the_copy_and_the_file(tmp_path: Path) -> None:
    from mlproj.train.checkpoint import host_copy

    net = torch.nn.Sequential(torch.nn.Embedding(1000, 64), torch.nn.Linear(64, 1000, bias=False))
    net[1].weight = net[0].weight  # tied input and output embeddings
    snapshot = host_copy({"model": net.state_dict()})["model"]
    assert snapshot["0.weight"].data_ptr() == snapshot["1.weight"].data_ptr()
    assert snapshot["0.weight"].data_ptr() != net[0].weight.data_ptr()  # still a copy
    atomic_save(snapshot, tmp_path / "tied.pt")
    atomic_save({"0.weight": net[0].weight.detach()}, tmp_path / "once.pt")
    assert os.path.getsize(tmp_path / "tied.pt") < 1.1 * os.path.getsize(tmp_path / "once.pt")
    loaded = torch.load(tmp_path / "tied.pt", weights_only=True)
    assert loaded["0.weight"].data_ptr() == loaded["1.weight"].data_ptr()
    assert torch.equal(loaded["1.weight"], net[1].weight)


def test_run_checkpoints_save_outside_background_writes_the_same_host_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlproj.train import checkpoint

    live = torch.nn.Linear(3, 2)
    written: list[dict] = []
    real_save = checkpoint.atomic_save
    monkeypatch.setattr(checkpoint, "atomic_save", lambda obj, path: (written.append(obj), real_save(obj, path)))
    checkpoints, _ = run_checkpoints(tmp_path)
    for background in (False, True):
        with checkpoints.writing(background=background):
            checkpoints.save(lambda: {**small_checkpoint(), "model": live.state_dict()}, best=False, step=1)
    synchronous, behind = (saved["model"]["weight"] for saved in written)
    for saved in (synchronous, behind):  # the host snapshot, not the parameter training goes on changing
        assert saved.data_ptr() != live.weight.data_ptr() and saved.device.type == "cpu"
        assert torch.equal(saved, live.weight)


def test_fit_keys_renames_the_module_versions_in_metadata_as_the_weights() -> None:
    from mlproj.train.checkpoint import fit_keys

    wrapped = torch.nn.Sequential(torch.nn.Sequential(torch.nn.BatchNorm1d(3)))  # [0] stands where DDP's `module` is
    saved = wrapped.state_dict()
    saved = collections.OrderedDict((key.replace("0.", "module.", 1), value) for key, value in saved.items())
    saved._metadata = collections.OrderedDict(
        (key.replace("0", "module", 1), {"version": 1}) for key in wrapped.state_dict()._metadata)
    plain = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    fitted = fit_keys(saved, plain.state_dict())
    assert list(fitted) == list(plain.state_dict())
    assert fitted._metadata == {key: {"version": 1} for key in plain.state_dict()._metadata}
