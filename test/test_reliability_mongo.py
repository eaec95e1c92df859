"""MongoDB unreachable at start or mid-run: training goes on, the file record is complete, ONE
warning says MongoDB was not reached, the end of the run waits a bounded time, and the URI's
password is never stored or printed.

At start: a real main.py process and a real pymongo client pointed at a closed local port. Mid-run:
mongomock stands in for the server (the only mock in these tests) and is made to fail, or to hang,
at step 6.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pymongo.errors
import pytest
from conftest import main_experiment, run_main

from mlproj.record.mongo import BackgroundMongoObserver
from mlproj.util.uri import redact_uri

N_STEPS = 12
TRAIN = ["with", "dataset=digits", "model=mlp", "batch_size=32", f"n_global_iterations={N_STEPS}",
         "save_iterations=4", "log_iteration_scalars=1", "tensorboard_dir=None"]


def assert_file_record_complete(run_dir: Path) -> None:
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train.loss"]["steps"] == list(range(1, N_STEPS + 1))
    assert (run_dir / "last.pt").exists() and (run_dir / "best.pt").exists()


def test_redact_uri_hides_password_only() -> None:
    assert redact_uri("mongodb://ann:pa55@db.example:27017/x?authSource=admin") == \
        "mongodb://ann:***@db.example:27017/x?authSource=admin"
    assert redact_uri("mongodb://127.0.0.1:27017/sacred") == "mongodb://127.0.0.1:27017/sacred"


def test_main_mongo_unreachable_at_start_trains_warns_once_and_keeps_password_secret(tmp_path: Path) -> None:
    password = f"pw-{uuid.uuid4().hex}"  # a value no source file holds
    runs = tmp_path / "runs"
    uri = f"mongodb://ann:{password}@127.0.0.1:1/sacred?serverSelectionTimeoutMS=1000"
    result = run_main(*TRAIN, runs=runs, env={"MONGODB_URI": uri})
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "MongoDB" in line]
    assert len(warnings) == 1, result.stderr
    assert "MongoDB at mongodb://ann:***@127.0.0.1:1/sacred" in warnings[0]
    assert "was not reached" in warnings[0] and "`mlproj sync`" in warnings[0]
    assert "Traceback" not in result.stderr
    assert_file_record_complete(runs / "1")
    assert password not in result.stdout + result.stderr
    for path in runs.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


@pytest.fixture
def mongo_that_breaks(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A mongomock database that, once `outage` is set, fails (or with `hang`, blocks) every write."""
    import mongomock
    import mongomock.gridfs

    mongomock.gridfs.enable_gridfs_integration()
    state = {"db": mongomock.MongoClient()["sacred"], "outage": threading.Event(), "hang": False,
             "release": threading.Event()}
    for name in ("insert_one", "update_one", "find", "find_one", "count_documents", "create_index"):
        original = getattr(mongomock.collection.Collection, name)

        def broken(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if state["outage"].is_set():
                if state["hang"]:
                    state["release"].wait(60)  # a server that accepted the connection and went silent
                raise pymongo.errors.ServerSelectionTimeoutError("127.0.0.1:27017: connection closed")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(mongomock.collection.Collection, name, broken)
    from mlproj.train.model import ClassificationModel

    train_batch = ClassificationModel.train_batch
    steps = []

    def outage_at_step_6(self: Any, batch: Any) -> Any:
        steps.append(1)
        if len(steps) == 6:
            # Mid-run: the background observer has told the server the run started (on a busy
            # machine its thread may still be on the way at step 6), then the server goes.
            deadline = time.monotonic() + 30
            while state["db"]["runs"].count_documents({}) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            state["outage"].set()
        return train_batch(self, batch)

    monkeypatch.setattr(ClassificationModel, "train_batch", outage_at_step_6)
    yield state
    state["release"].set()


def run_with_mongo(observer: BackgroundMongoObserver, runs: Path, monkeypatch: pytest.MonkeyPatch) -> float:
    """Run main.py in this process with `observer`; the seconds the run's end waited for MongoDB."""
    monkeypatch.setenv("MLPROJ_RUNS_DIR", str(runs))
    waited = []
    end = observer._end

    def timed_end(*args: Any, **kwargs: Any) -> None:
        started = time.monotonic()
        end(*args, **kwargs)
        waited.append(time.monotonic() - started)

    monkeypatch.setattr(observer, "_end", timed_end)
    ex = main_experiment()
    ex.observers.append(observer)
    assert ex.run_commandline(["main.py", *TRAIN]).status == "COMPLETED"
    return waited[0]


def mongo_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "MongoDB" in r.getMessage()]


def test_mongo_fails_mid_run_training_completes_one_warning(mongo_that_breaks: dict, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    observer = BackgroundMongoObserver("mongodb://ann:secret@127.0.0.1/sacred", connect=lambda: mongo_that_breaks["db"])
    waited = run_with_mongo(observer, tmp_path / "runs", monkeypatch)
    assert_file_record_complete(tmp_path / "runs" / "1")
    warnings = mongo_warnings(caplog)
    assert len(warnings) == 1 and "was not reached (ServerSelectionTimeoutError" in warnings[0]
    assert "secret" not in warnings[0]
    mongo_that_breaks["outage"].clear()  # the server is back: read what it got before the outage
    document = mongo_that_breaks["db"]["runs"].find_one()
    assert document["status"] == "RUNNING"  # `mlproj sync` can complete it from the file record
    assert document["config"]["seed"] == json.loads((tmp_path / "runs" / "1" / "config.json").read_text())["seed"]
    assert waited < 3.0  # a failed database is not waited for (waiting would take end_wait_s, 5 s)


def test_mongo_hangs_mid_run_end_of_run_waits_at_most_end_wait_s(mongo_that_breaks: dict, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    mongo_that_breaks["hang"] = True
    observer = BackgroundMongoObserver("mongodb://127.0.0.1/sacred", connect=lambda: mongo_that_breaks["db"],
                                       end_wait_s=1.0)
    waited = run_with_mongo(observer, tmp_path / "runs", monkeypatch)
    assert_file_record_complete(tmp_path / "runs" / "1")
    warnings = mongo_warnings(caplog)
    assert len(warnings) == 1 and "did not answer within 1 s at the end of the run" in warnings[0]
    assert 1.0 <= waited < 4.0  # end_wait_s, not the default 5 s; slack for a busy machine
