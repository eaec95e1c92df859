"""`mlproj sync`: file runs copied into MongoDB exactly as Sacred's MongoObserver would have written them.

No MongoDB server can be installed on the test machines: the databases are mongomock (an in-memory
fake of pymongo, as in Sacred's own observer tests). The reference is what Sacred's MongoObserver
itself writes for the same run: a tiny Sacred experiment runs once with both a file observer and a
MongoObserver on a mongomock database, then `sync_runs` copies the run folder into a second one.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import gridfs
import mongomock
import mongomock.gridfs
import pytest
from sacred import Experiment
from sacred.observers import MongoObserver

from mlproj.cli import main as cli_main
from mlproj.record.observers import RunFolderObserver
from mlproj.runs.sync import sync_runs

mongomock.gridfs.enable_gridfs_integration()


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, object]:
    """One run recorded twice: to a runs dir and, by Sacred's MongoObserver, to a mongomock database."""
    runs = tmp_path / "runs"
    reference = mongomock.MongoClient().reference
    mongo = MongoObserver.create_from(reference.runs, gridfs.GridFS(reference), metrics_collection=reference.metrics)
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(b"\x00\x01weights")

    ex = Experiment("tiny", save_git_info=False)
    ex.add_config(lr=0.1, nested={"depth": 2})
    ex.observers += [RunFolderObserver(str(runs)), mongo]

    @ex.main
    def main(_run, lr):
        _run.info["run_key"] = "20260101-000000-abcdef12"
        for step in range(4):
            _run.log_scalar("train.loss", 1.0 / (step + 1), step)
            _run.log_scalar("validation.accuracy", 0.5 + step / 10, step)
        _run.add_artifact(str(artifact), "weights.bin")
        print("trained")
        return 0.8

    ex.run()
    return runs, reference


def close_in_time(a: object, b: object) -> bool:
    return isinstance(a, dt.datetime) and isinstance(b, dt.datetime) and abs(a - b) < dt.timedelta(milliseconds=1)


def test_sync_runs_document_matches_mongo_observer(recorded) -> None:
    runs, reference = recorded
    synced = mongomock.MongoClient().synced
    result = sync_runs(str(runs), synced)
    assert result.added == [(1, 1)]
    expected, got = reference.runs.find_one({"_id": 1}), synced.runs.find_one({"_id": 1})

    assert set(got) == set(expected)
    for key in ("format", "command", "host", "config", "meta", "status", "result", "resources"):
        assert got[key] == expected[key], key
    for key in ("start_time", "heartbeat", "stop_time"):
        assert close_in_time(got[key], expected[key]), key
    assert got["captured_out"].strip() == expected["captured_out"].strip()
    assert {k: v for k, v in got["info"].items() if k != "metrics"} == {k: v for k, v in expected["info"].items() if k != "metrics"}
    assert {k: v for k, v in got["experiment"].items() if k != "sources"} == {k: v for k, v in expected["experiment"].items() if k != "sources"}


def test_sync_runs_metrics_referenced_from_info_as_mongo_observer(recorded) -> None:
    runs, reference = recorded
    synced = mongomock.MongoClient().synced
    sync_runs(str(runs), synced)
    for db in (reference, synced):
        doc = db.runs.find_one({"_id": 1})
        assert sorted(m["name"] for m in doc["info"]["metrics"]) == ["train.loss", "validation.accuracy"]
    for ref in synced.runs.find_one({"_id": 1})["info"]["metrics"]:
        from bson import ObjectId

        got = synced.metrics.find_one({"_id": ObjectId(ref["id"])})
        expected = reference.metrics.find_one({"run_id": 1, "name": ref["name"]})
        assert got["run_id"] == 1 and got["name"] == ref["name"]
        assert got["steps"] == expected["steps"] and got["values"] == expected["values"]
        assert all(close_in_time(a, b) for a, b in zip(got["timestamps"], expected["timestamps"], strict=True))


def test_sync_runs_sources_and_artifacts_in_gridfs(recorded) -> None:
    runs, reference = recorded
    synced = mongomock.MongoClient().synced
    sync_runs(str(runs), synced)

    def files(db, entries, key):
        fs = gridfs.GridFS(db)
        return {entry[key[0]]: (fs.get(entry[key[1]]).filename, fs.get(entry[key[1]]).read()) for entry in entries}

    for section, key in (("artifacts", ("name", "file_id")), ("sources", (0, 1))):
        pick = (lambda d: d["artifacts"]) if section == "artifacts" else (lambda d: d["experiment"]["sources"])
        expected = files(reference, pick(reference.runs.find_one({"_id": 1})), key)
        got = files(synced, pick(synced.runs.find_one({"_id": 1})), key)
        assert got == expected and got, section


def test_sync_runs_second_time_adds_nothing(recorded) -> None:
    runs, _ = recorded
    synced = mongomock.MongoClient().synced
    sync_runs(str(runs), synced)
    counts = [synced[c].count_documents({}) for c in ("runs", "metrics", "fs.files")]
    result = sync_runs(str(runs), synced)
    assert result.added == [] and result.updated == [] and result.skipped == [(1, 1)]
    assert [synced[c].count_documents({}) for c in ("runs", "metrics", "fs.files")] == counts


def test_sync_runs_changed_run_updated_in_place(recorded) -> None:
    runs, _ = recorded
    synced = mongomock.MongoClient().synced
    sync_runs(str(runs), synced)
    record = json.loads((runs / "1" / "run.json").read_text())
    record.update(status="INTERRUPTED", heartbeat="2026-01-01T00:00:00.000000")
    (runs / "1" / "run.json").write_text(json.dumps(record))
    result = sync_runs(str(runs), synced)
    assert result.updated == [(1, 1)]
    assert synced.runs.count_documents({}) == 1 and synced.metrics.count_documents({}) == 2
    assert synced.runs.find_one({"_id": 1})["status"] == "INTERRUPTED"


def test_sync_runs_id_taken_by_other_run_next_free_id(recorded) -> None:
    runs, _ = recorded
    synced = mongomock.MongoClient().synced
    synced.runs.insert_one({"_id": 1, "info": {"run_key": "someone-else"}})
    assert sync_runs(str(runs), synced).added == [(1, 2)]


def test_sync_then_runs_mongo_lists_same_metrics(recorded, capsys) -> None:
    runs, _ = recorded
    uri = "mongodb://bob:pw@mongo.test:27017/synced"
    with mongomock.patch(servers=(("mongo.test", 27017),)):
        assert cli_main(["sync", str(runs), "--mongo", uri]) == 0
        out = capsys.readouterr().out
        assert "added run 1 as _id 1" in out and "pw@" not in out
        assert cli_main(["runs", "--mongo", uri, "--format", "json"]) == 0
        from_mongo = json.loads(capsys.readouterr().out)
    assert cli_main(["runs", str(runs), "--format", "json"]) == 0
    from_files = json.loads(capsys.readouterr().out)
    assert from_mongo == from_files and from_files[0]["validation.accuracy best"] == pytest.approx(0.8)


def test_sync_cli_no_runs_one_line_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    with mongomock.patch(servers=(("mongo.test", 27017),)):
        assert cli_main(["sync", str(tmp_path / "empty"), "--mongo", "mongodb://mongo.test:27017"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no runs" in err


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sync_cli_malformed_uri_says_malformed_and_the_form(tmp_path: Path, capsys) -> None:
    assert cli_main(["sync", str(tmp_path), "--mongo", "bogus://x"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "mlproj sync: error: MongoDB URI bogus://x is malformed (Invalid URI scheme: URI must begin with "
        "'mongodb://' or 'mongodb+srv://'): write it as mongodb://[USER:PASSWORD@]HOST[:PORT]/DB or "
        "mongodb+srv://[USER:PASSWORD@]HOST/DB.\n"
    )


def test_check_mongo_unset_one_line(monkeypatch, capsys) -> None:
    monkeypatch.delenv("MONGODB_URI", raising=False)
    assert cli_main(["check-mongo"]) == 1
    assert capsys.readouterr().err == (
        "mlproj check-mongo: error: no MongoDB URI: set MONGODB_URI or pass --mongo, e.g. --mongo "
        "mongodb://localhost:27017/sacred.\n"
    )


def test_check_mongo_malformed_one_line_password_hidden(monkeypatch, capsys) -> None:
    monkeypatch.setenv("MONGODB_URI", "mongodb://bob:s3cret@@localhost/sacred")
    assert cli_main(["check-mongo"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s3cret" not in err
    assert err.startswith("mlproj check-mongo: error: MongoDB URI mongodb://bob:***@@localhost/sacred is malformed (")


def test_check_mongo_closed_port_one_line_password_hidden(monkeypatch, capsys) -> None:
    port = _closed_port()
    monkeypatch.setenv("MONGODB_URI", f"mongodb://bob:s3cret@127.0.0.1:{port}/sacred?serverSelectionTimeoutMS=200")
    assert cli_main(["check-mongo"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"mlproj check-mongo: error: cannot reach MongoDB at mongodb://bob:***@127.0.0.1:{port}/sacred?"
        f"serverSelectionTimeoutMS=200 (127.0.0.1:{port}: [Errno 111] Connection refused): check the URI and "
        "that the server runs.\n"
    )


def test_check_mongo_server_answers_counts_runs(recorded, capsys) -> None:
    runs, _ = recorded
    uri = "mongodb://bob:pw@mongo.test:27017/synced"
    with mongomock.patch(servers=(("mongo.test", 27017),)):
        assert cli_main(["sync", str(runs), "--mongo", uri]) == 0
        capsys.readouterr()
        assert cli_main(["check-mongo", "--mongo", uri]) == 0
    assert capsys.readouterr().out == "MongoDB at mongodb://bob:***@mongo.test:27017/synced answers: database synced, 1 runs\n"


def test_make_omniboard_checks_uri_before_npm(tmp_path: Path) -> None:
    import os
    import subprocess

    from conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    had_node_modules = (ROOT / "node_modules").exists()
    unset = subprocess.run(["make", "--no-print-directory", "omniboard"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert unset.returncode != 0 and (ROOT / "node_modules").exists() == had_node_modules
    assert unset.stdout == "make omniboard: set MONGODB_URI, e.g. MONGODB_URI=mongodb://localhost:27017/sacred make omniboard\n"
    absent = f"OMNIBOARD={tmp_path}/node_modules/.bin/omniboard"  # as if not installed yet
    dry = subprocess.run(["make", "-n", "--no-print-directory", "omniboard", absent], cwd=ROOT, env={**env, "MONGODB_URI": "mongodb://h/db"},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    order = [i for i, line in enumerate(dry) if "mlproj check-mongo" in line or line.startswith("npm install")]
    assert [dry[i].split()[0] for i in order] == [".venv/bin/mlproj", "npm"]
