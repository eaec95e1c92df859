"""The MongoDB observer: one id with the file record, no lost runs when the server is away, no credentials leaked.

No MongoDB server can be installed on the test machines, so the database is mongomock (an
in-memory fake of pymongo, which Sacred's own observer tests use too), patched in with
`mongomock.patch` so the code under test builds its clients from a URI as it does in production.
The last test talks to a real server when MONGODB_URI is set and is skipped otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mongomock
import mongomock.gridfs
import pytest
from conftest import run_main

from mlproj.record.experiment import create_experiment

SECRET = "s3cret-pw"
FAKE_URI = f"mongodb://alice:{SECRET}@mongo.test:27017/mlproj_test"


@pytest.fixture
def fake_mongo():
    """pymongo.MongoClient replaced by mongomock for host mongo.test (mocked MongoDB, see module docstring)."""
    mongomock.gridfs.enable_gridfs_integration()
    with mongomock.patch(servers=(("mongo.test", 27017),)):
        import pymongo

        yield pymongo.MongoClient(FAKE_URI)["mlproj_test"]


def tiny_experiment():
    ex = create_experiment("tiny")

    @ex.config
    def config():
        lr = 0.1  # noqa: F841

    @ex.main
    def main(_run, lr):
        for step in range(3):
            _run.log_scalar("train.loss", 1.0 / (step + 1), step)
        print("trained")
        return 0.5

    return ex


def test_attach_observers_mongo_ids_ahead_of_folders_one_id_in_both(fake_mongo, runs_dir, monkeypatch) -> None:
    monkeypatch.setenv("MONGODB_URI", FAKE_URI)
    for old in (1, 2):
        (runs_dir / str(old)).mkdir(parents=True)
    fake_mongo.runs.insert_many([{"_id": i, "info": {}} for i in (1, 2, 3, 4)])

    run = tiny_experiment().run()

    assert str(run._id) == "5"  # the folder name; MongoDB got it as the integer 5
    assert (runs_dir / "5" / "run.json").is_file()
    doc = fake_mongo.runs.find_one({"_id": 5})
    assert doc["status"] == "COMPLETED"
    assert doc["info"]["run_key"] == json.loads((runs_dir / "5" / "info.json").read_text())["run_key"]
    metric = fake_mongo.metrics.find_one({"run_id": 5, "name": "train.loss"})
    assert metric["values"] == [1.0, 0.5, pytest.approx(1 / 3)]


def test_attach_observers_folders_ahead_of_mongo_takes_next_folder_id(fake_mongo, runs_dir, monkeypatch) -> None:
    monkeypatch.setenv("MONGODB_URI", FAKE_URI)
    for old in (1, 2, 3):
        (runs_dir / str(old)).mkdir(parents=True)

    run = tiny_experiment().run()

    assert str(run._id) == "4" and fake_mongo.runs.find_one({"_id": 4}) is not None
    assert isinstance(fake_mongo.runs.find_one({"_id": 4})["_id"], int)


def test_mongo_observer_credentials_absent_from_records_and_output(fake_mongo, runs_dir, monkeypatch, capfd, caplog) -> None:
    monkeypatch.setenv("MONGODB_URI", FAKE_URI)
    caplog.set_level(logging.DEBUG)
    tiny_experiment().run()
    doc = fake_mongo.runs.find_one({"_id": 1})
    out, err = capfd.readouterr()
    # _sources holds this test file, which spells the secret out; everything else the run wrote is checked.
    recorded = "".join(p.read_text(errors="replace") for p in runs_dir.rglob("*") if p.is_file() and "_sources" not in p.parts)
    for text in (json.dumps(doc, default=str), out, err, caplog.text, recorded):
        assert SECRET not in text and "alice" not in text


def test_mongo_observer_server_down_run_completes_one_warning(runs_dir, monkeypatch, capfd, caplog) -> None:
    # Nothing listens on port 1: every MongoDB call fails after 200 ms.
    monkeypatch.setenv("MONGODB_URI", f"mongodb://alice:{SECRET}@127.0.0.1:1/db?serverSelectionTimeoutMS=200")
    started = time.monotonic()

    run = tiny_experiment().run()

    assert time.monotonic() - started < 25  # not stalled by pymongo's 30 s server selection
    assert run.status == "COMPLETED"
    assert json.loads((runs_dir / "1" / "run.json").read_text())["status"] == "COMPLETED"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "MongoDB" in r.getMessage()]
    assert len(warnings) == 1 and "`mlproj sync`" in warnings[0]
    out, err = capfd.readouterr()
    assert SECRET not in out + err + caplog.text


def _with_database(uri: str, name: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


@pytest.mark.skipif(not os.environ.get("MONGODB_URI"), reason="needs a MongoDB server: set MONGODB_URI=mongodb://host:27017 to run")
def test_main_real_mongodb_one_id_in_both_and_sync_lists_back(tmp_path: Path) -> None:
    import pymongo

    from mlproj.cli import main as cli_main

    name = f"mlproj_test_{uuid.uuid4().hex[:8]}"
    uri = _with_database(os.environ["MONGODB_URI"], name)
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        result = run_main("with", "dataset=digits", "n_epochs=1", runs=tmp_path / "runs", env={"MONGODB_URI": uri})
        assert result.returncode == 0, result.stderr
        doc = client[name].runs.find_one({"_id": 1})
        assert doc["status"] == "COMPLETED"
        assert doc["info"]["run_key"] == json.loads((tmp_path / "runs" / "1" / "info.json").read_text())["run_key"]
        assert {m["name"] for m in doc["info"]["metrics"]} >= {"train.loss", "validation.accuracy"}
        assert cli_main(["sync", str(tmp_path / "runs"), "--mongo", uri]) == 0  # already there: nothing added
        assert client[name].runs.count_documents({}) == 1
    finally:
        client.drop_database(name)


def test_mongo_artifact_saved_again_replaces_its_copy(fake_mongo, runs_dir, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MONGODB_URI", FAKE_URI)
    ex = create_experiment("artifacts")
    checkpoint = tmp_path / "last.pt"

    @ex.main
    def main(_run):
        for epoch in range(3):  # as the loop writes last.pt after every epoch
            checkpoint.write_bytes(f"epoch {epoch}".encode())
            _run.add_artifact(str(checkpoint), "last.pt")

    ex.run()
    (doc,) = fake_mongo.runs.find()
    assert [a["name"] for a in doc["artifacts"]] == ["last.pt"]
    import gridfs

    (stored,) = fake_mongo["fs.files"].find({"filename": {"$regex": "^artifact://"}})  # sources are there too
    assert stored["_id"] == doc["artifacts"][0]["file_id"]
    assert gridfs.GridFS(fake_mongo).get(stored["_id"]).read() == b"epoch 2"


def test_mongo_option_m_copied_in_background_with_the_folder_id(fake_mongo, runs_dir) -> None:
    (runs_dir / "1").mkdir(parents=True)
    ex = tiny_experiment()
    run = ex.run(options={"--mongo_db": "mongo.test:27017:mlproj_test"})
    assert str(run._id) == "2"
    doc = fake_mongo.runs.find_one({"_id": 2})
    assert doc["status"] == "COMPLETED" and doc["config"]["lr"] == 0.1
