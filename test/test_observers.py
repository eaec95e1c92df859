"""The file record: Sacred's layout, written atomically, complete even when a metric is odd."""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from sacred.observers import FileStorageObserver

from mlproj.record.experiment import create_experiment
from mlproj.record.observers import RunFolderObserver


def test_run_folder_tensor_metric_recorded_and_run_completed(runs_dir: Path) -> None:
    ex = create_experiment("odd_metric")

    @ex.main
    def main(_run):
        _run.log_scalar("acc", torch.tensor(0.5), 1)  # a user's 0-d tensor, not a float

    ex.run()
    assert json.loads((runs_dir / "1" / "run.json").read_text())["status"] == "COMPLETED"
    assert json.loads((runs_dir / "1" / "metrics.json").read_text())["acc"]["values"] == [0.5]


def test_run_folder_files_get_the_umask_mode_not_0600(runs_dir: Path, tmp_path: Path) -> None:
    ex = create_experiment("modes")
    artifact = tmp_path / "best.pt"
    artifact.write_bytes(b"weights")

    @ex.main
    def main(_run):
        _run.log_scalar("loss", 1.0, 1)
        _run.add_artifact(str(artifact), "best.pt")

    ex.run()
    umask = os.umask(0)
    os.umask(umask)
    for name in ("run.json", "config.json", "metrics.json", "best.pt"):
        assert stat.S_IMODE((runs_dir / "1" / name).stat().st_mode) == 0o666 & ~umask, name


# ---- what Sacred's own FileStorageObserver suite checks, held for RunFolderObserver
T1, T2 = datetime.datetime(2026, 5, 4, 3, 2, 1), datetime.datetime(2026, 5, 5, 5, 5, 5, 5)
EX_INFO = {"name": "exp", "sources": [], "doc": "", "base_dir": "/tmp", "dependencies": [], "repositories": []}


def started(base: Path, _id: str | None = None, **options: bool) -> tuple[RunFolderObserver, Path]:
    observer = RunFolderObserver(str(base), **options)
    _id = observer.started_event(EX_INFO, "run", {"hostname": "h"}, T1, {"answer": 42}, {"comment": "c"}, _id)
    return observer, base / str(_id)


def test_run_folder_observer_started_event_writes_sacreds_run_json_and_empty_cout(tmp_path: Path) -> None:
    observer, folder = started(tmp_path / "fs", "given")
    assert folder.name == "given" and (folder / "cout.txt").read_text() == ""
    assert json.loads((folder / "config.json").read_text()) == {"answer": 42}
    assert json.loads((folder / "run.json").read_text()) == {
        "experiment": EX_INFO, "command": "run", "host": {"hostname": "h"}, "start_time": T1.isoformat(),
        "heartbeat": None, "meta": {"comment": "c"}, "resources": [], "artifacts": [], "status": "RUNNING",
    }


def test_run_folder_observer_each_heartbeat_updates_run_info_and_cout(tmp_path: Path) -> None:
    observer, folder = started(tmp_path / "fs")
    out = ""
    for beat in range(3):
        out += f"line {beat}\n"
        observer.heartbeat_event(info={"nr": beat}, captured_out=out, beat_time=T2 + datetime.timedelta(seconds=10 * beat), result=17)
        run = json.loads((folder / "run.json").read_text())
        assert (folder / "cout.txt").read_text() == out
        assert run["heartbeat"] == (T2 + datetime.timedelta(seconds=10 * beat)).isoformat() and run["result"] == 17
        assert json.loads((folder / "info.json").read_text()) == {"nr": beat}


@pytest.mark.parametrize(("event", "args", "status"), [
    ("completed_event", {"stop_time": T2, "result": 42}, "COMPLETED"),
    ("interrupted_event", {"interrupt_time": T2, "status": "CUSTOM_INTERRUPTION"}, "CUSTOM_INTERRUPTION"),
    ("failed_event", {"fail_time": T2, "fail_trace": ["trace\n"]}, "FAILED"),
])
def test_run_folder_observer_end_events_record_stop_time_and_status(tmp_path: Path, event: str, args: dict, status: str) -> None:
    observer, folder = started(tmp_path / "fs")
    getattr(observer, event)(**args)
    run = json.loads((folder / "run.json").read_text())
    assert run["stop_time"] == T2.isoformat() and run["status"] == status
    assert run.get("result") == args.get("result") and run.get("fail_trace") == args.get("fail_trace")


def test_run_folder_observer_artifact_and_resource_recorded_once(tmp_path: Path) -> None:
    source = tmp_path / "file.py"
    source.write_text("import sacred\n")
    observer, folder = started(tmp_path / "fs")
    observer.artifact_event("my_artifact.py", str(source))
    observer.resource_event(str(source))
    second, second_folder = started(tmp_path / "fs")
    second.resource_event(str(source))
    assert (folder / "my_artifact.py").read_text() == "import sacred\n"
    assert json.loads((folder / "run.json").read_text())["artifacts"] == ["my_artifact.py"]
    (stored,) = (tmp_path / "fs" / "_resources").iterdir()  # the same file is stored once for both runs
    assert json.loads((second_folder / "run.json").read_text())["resources"] == [[str(source), str(stored)]]


def test_run_folder_observer_metrics_json_holds_each_heartbeats_metrics(tmp_path: Path, monkeypatch) -> None:
    import mlproj.record.observers as observers

    # Cheap rewrites happen at every beat; on a busy machine two fsyncs can pass 20 ms, which is the
    # throttle's case (tested on its own), so this test says what counts as cheap.
    monkeypatch.setattr(observers, "CHEAP_REWRITE_SECONDS", 5.0)
    observer, folder = started(tmp_path / "fs")

    def log(name: str, steps: list[int], values: list[float]) -> None:
        observer.log_metrics({name: {"steps": steps, "values": values, "timestamps": [T1] * len(steps)}}, {})
        observer.heartbeat_event(info={}, captured_out="", beat_time=T2, result=None)

    log("training.loss", [10, 20, 30], [1, 2, 3])
    log("training.accuracy", [10, 20, 30], [100, 200, 300])
    assert json.loads((folder / "metrics.json").read_text())["training.loss"]["values"] == [1, 2, 3]
    log("training.loss", [40, 50, 60], [10, 20, 30])  # right after the last beat: appended, not overwritten
    metrics = json.loads((folder / "metrics.json").read_text())
    assert sorted(metrics) == ["training.accuracy", "training.loss"]
    assert metrics["training.loss"]["steps"] == [10, 20, 30, 40, 50, 60]
    assert metrics["training.loss"]["values"] == [1, 2, 3, 10, 20, 30]
    assert metrics["training.accuracy"] == {"steps": [10, 20, 30], "values": [100, 200, 300], "timestamps": [T1.isoformat()] * 3}
    summary = json.loads((folder / "metrics_summary.json").read_text())["metrics"]
    assert summary["training.loss"] == {"count": 6, "first": 1, "first_step": 10, "last": 30, "last_step": 60,
                                        "min": 1, "min_step": 10, "max": 30, "max_step": 60}


def test_run_folder_observer_slow_rewrite_waits_then_the_end_writes_it(tmp_path: Path) -> None:
    observer, folder = started(tmp_path / "fs")
    observer.log_metrics({"loss": {"steps": [1], "values": [1.0], "timestamps": [T1]}}, {})
    observer._metrics_write_seconds = 1.0  # as if the last rewrite took a second: wait 100 s before the next
    observer.log_metrics({"loss": {"steps": [2], "values": [0.5], "timestamps": [T1]}}, {})
    assert json.loads((folder / "metrics.json").read_text())["loss"]["values"] == [1.0]
    observer.completed_event(stop_time=T2, result=None)
    assert json.loads((folder / "metrics.json").read_text())["loss"]["values"] == [1.0, 0.5]


@pytest.mark.parametrize("name", ["run.json", "config.json", "cout.txt", "metrics.json", "info.json", "metrics_summary.json"])
def test_run_folder_observer_artifact_named_like_a_record_file_refused_record_kept(tmp_path: Path, name: str) -> None:
    source = tmp_path / "x.json"
    source.write_text("{}")
    observer, folder = started(tmp_path / "fs")
    observer.log_metrics({"loss": {"steps": [1], "values": [1.0], "timestamps": [T1]}}, {})
    observer.heartbeat_event(info={"nr": 1}, captured_out="out\n", beat_time=T2, result=None)
    before = (folder / name).read_bytes()
    with pytest.raises(FileExistsError, match=name):
        observer.artifact_event(name, str(source))
    assert (folder / name).read_bytes() == before


def test_run_folder_observer_built_creates_no_folder_until_a_run_starts(tmp_path: Path) -> None:
    observer = RunFolderObserver(str(tmp_path / "fs"))
    assert not (tmp_path / "fs").exists()  # an observer attached to a run that never starts leaves nothing
    observer.started_event(dict(EX_INFO), "run", {}, T1, {}, {}, None)
    assert (tmp_path / "fs" / "1").is_dir()


def test_run_folder_observer_queued_event_writes_config_and_queued_run_json(tmp_path: Path) -> None:
    observer = RunFolderObserver(str(tmp_path / "fs"))
    _id = observer.queued_event(EX_INFO, "train", {"hostname": "h"}, T1, {"lr": 0.1}, {"comment": "later"}, None)
    folder = tmp_path / "fs" / str(_id)
    assert _id == "1"
    assert json.loads((folder / "config.json").read_text()) == {"lr": 0.1}
    assert json.loads((folder / "run.json").read_text()) == {
        "experiment": EX_INFO, "command": "train", "host": {"hostname": "h"}, "meta": {"comment": "later"}, "status": "QUEUED",
    }


def test_run_folder_observer_folder_taken_but_not_yet_listed_next_run_takes_the_next_id(tmp_path: Path, monkeypatch) -> None:
    _, first = started(tmp_path / "fs")
    # A network file system can list a folder late: the id is then taken by mkdir, not by the listing.
    monkeypatch.setattr(os, "listdir", lambda path: [])
    _, second = started(tmp_path / "fs")
    assert (first.name, second.name) == ("1", "2")
    assert json.loads((first / "run.json").read_text())["start_time"] == T1.isoformat()


def test_run_folder_observer_run_folder_never_creatable_raises_file_exists_error(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "fs").mkdir()

    def always_taken(path, mode=0o777):
        raise FileExistsError(path)

    monkeypatch.setattr(os, "mkdir", always_taken)  # every id taken: give up instead of trying forever
    with pytest.raises(FileExistsError):
        started(tmp_path / "fs")


def sources_run(base: Path, **options: bool) -> tuple[RunFolderObserver, dict]:
    """A run whose experiment has one source file, `train.py`, under its base_dir."""
    code = base.parent / "code"
    code.mkdir(exist_ok=True)
    (code / "train.py").write_text("print('train')\n")
    ex_info = {**EX_INFO, "base_dir": str(code), "sources": [["train.py", "ignored-digest"]]}
    observer = RunFolderObserver(str(base), **options)
    _id = observer.started_event(ex_info, "run", {}, T1, {}, {}, None)
    return observer, json.loads((base / str(_id) / "run.json").read_text())


def test_run_folder_observer_sources_stored_once_under_sources_and_listed_by_path(tmp_path: Path) -> None:
    _, run = sources_run(tmp_path / "fs")
    _, second = sources_run(tmp_path / "fs")
    ((name, stored),) = run["experiment"]["sources"]
    assert name == "train.py" and stored.startswith("_sources/train_") and stored.endswith(".py")
    assert (tmp_path / "fs" / stored).read_text() == "print('train')\n"
    assert second["experiment"]["sources"] == [[name, stored]]
    assert [p.name for p in (tmp_path / "fs" / "_sources").iterdir()] == [Path(stored).name]


def test_run_folder_observer_copy_sources_false_lists_the_source_where_it_is(tmp_path: Path) -> None:
    _, run = sources_run(tmp_path / "fs", copy_sources=False)
    assert not (tmp_path / "fs" / "_sources").exists()
    assert run["experiment"]["sources"] == [["train.py", os.path.relpath(tmp_path / "code" / "train.py", tmp_path / "fs")]]


def test_run_folder_observer_copy_artifacts_false_resource_under_runs_dir_not_copied(tmp_path: Path) -> None:
    observer, folder = started(tmp_path / "fs", copy_artifacts=False)
    resource = tmp_path / "fs" / "shared" / "vocab.txt"  # already in the record: a copy would only duplicate it
    resource.parent.mkdir()
    resource.write_text("a b c\n")
    observer.resource_event(str(resource))
    assert not (tmp_path / "fs" / "_resources").exists()
    assert json.loads((folder / "run.json").read_text())["resources"] == [[str(resource), str(resource)]]


def test_run_folder_observer_equal_exactly_when_runs_dirs_are_equal(tmp_path: Path) -> None:
    same = RunFolderObserver(str(tmp_path / "a"))
    assert same == RunFolderObserver(str(tmp_path / "a")) and not same != RunFolderObserver(str(tmp_path / "a"))
    assert same == FileStorageObserver(str(tmp_path / "a"))  # Sacred's observer of the same folder is the same record
    assert same != RunFolderObserver(str(tmp_path / "b"))
    assert same != "a" and not same == str(tmp_path / "a")
