"""The file record: Sacred's layout, written atomically, complete even when a metric is odd."""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import pytest
import torch

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


def started(base: Path, _id: str | None = None) -> tuple[RunFolderObserver, Path]:
    observer = RunFolderObserver(str(base))
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


def test_run_folder_observer_artifact_named_like_the_summary_refused(tmp_path: Path) -> None:
    source = tmp_path / "x.json"
    source.write_text("{}")
    observer, _ = started(tmp_path / "fs")
    with pytest.raises(FileExistsError, match="metrics_summary.json"):
        observer.artifact_event("metrics_summary.json", str(source))
