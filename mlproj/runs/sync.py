"""Copying file-storage runs into MongoDB, in the layout Sacred's MongoObserver writes.

Omniboard reads MongoDB only, and Sacred has no way to move a run recorded to files (on an offline
node, or while the server was down) into it. `sync_runs` writes, per run folder:
- a `runs` document with an integer `_id` (the folder's id when MongoDB does not hold it yet) and
  MongoObserver's fields: experiment (sources as GridFS ids), format, command, host, start_time,
  config, meta, status, resources, artifacts ({name, file_id}), captured_out, info (with
  `info.metrics` = [{name, id}] pointing at the metrics documents, which Omniboard's metric
  columns need), heartbeat, result, stop_time, fail_trace; times as UTC datetimes;
- one `metrics` document per metric: run_id, name, steps, values, timestamps;
- sources and artifacts as GridFS files named as MongoObserver names them.

A run is matched by `info.run_key`, which every mlproj run carries: a run already in the database
is skipped when unchanged, and replaced in place (same `_id`) when the folder holds a newer state
(e.g. it was RUNNING at the last sync). A second sync adds nothing.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from dataclasses import dataclass
from typing import Any

import gridfs

from mlproj.errors import MLProjError
from mlproj.runs.entry import parse_time
from mlproj.runs.reader import read_runs
from mlproj.runs.record import Run
from mlproj.util.mongo import next_run_id

MONGO_FORMAT = "MongoObserver-0.7.0"  # sacred.observers.MongoObserver.VERSION


@dataclass
class SyncResult:
    """What `sync_runs` did: (folder id, MongoDB _id) pairs per outcome."""

    added: list[tuple[Any, int]]
    updated: list[tuple[Any, int]]
    skipped: list[tuple[Any, int]]


def sync_runs(runs_dir: str, database: Any) -> SyncResult:
    """Copy every run under `runs_dir` into `database` (a pymongo Database); see the module docstring.

    Raises:
        MLProjError: when `runs_dir` holds no runs, or a run has no run_key to match it by.
    """
    runs = read_runs(runs_dir, summaries=False)  # each run's series is copied whole, one run at a time
    if not runs:
        raise MLProjError(f"{runs_dir} holds no runs (no <id>/run.json folders): pass the runs dir your runs were recorded in.")
    result = SyncResult([], [], [])
    for run in runs:
        if not run.run_key:
            raise MLProjError(f"run {run.path} has no run_key in info.json, so a later sync could not recognise it: it was not recorded by mlproj.")
        existing = database["runs"].find_one({"info.run_key": run.run_key})
        if existing is None:
            _id = run.id if isinstance(run.id, int) and database["runs"].find_one({"_id": run.id}, {"_id": 1}) is None else next_run_id(database)
            _write_run(database, run, _id, runs_dir)
            result.added.append((run.id, _id))
        elif _is_same_state(existing, run):
            result.skipped.append((run.id, existing["_id"]))
        else:
            _delete_run_files(database, existing)
            _write_run(database, run, existing["_id"], runs_dir)
            result.updated.append((run.id, existing["_id"]))
    return result


def _is_same_state(doc: dict[str, Any], run: Run) -> bool:
    return doc.get("status") == run.status and _to_millis(parse_time(doc.get("heartbeat"))) == _to_millis(run.heartbeat)


def _to_millis(value: Any) -> Any:
    """BSON datetimes keep milliseconds: compare at that precision."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000) if value is not None else None


def _delete_run_files(database: Any, doc: dict[str, Any]) -> None:
    fs = gridfs.GridFS(database)
    for artifact in doc.get("artifacts", []):
        if isinstance(artifact, dict) and artifact.get("file_id") is not None:
            fs.delete(artifact["file_id"])
    database["metrics"].delete_many({"run_id": doc["_id"]})
    database["runs"].delete_one({"_id": doc["_id"]})


def _write_run(database: Any, run: Run, _id: int, runs_dir: str) -> None:
    fs = gridfs.GridFS(database)
    experiment = dict(run.experiment)
    experiment["sources"] = [_put_source(fs, experiment.get("base_dir", ""), name, os.path.join(runs_dir, stored)) for name, stored in experiment.get("sources", [])]
    info = dict(run.info)
    info["metrics"] = []
    for name, series in run.metrics.items():
        metric_id = database["metrics"].insert_one(
            {"run_id": _id, "name": name, "steps": series.steps, "values": series.values, "timestamps": series.timestamps}
        ).inserted_id
        info["metrics"].append({"name": name, "id": str(metric_id)})
    artifacts = []
    for name in run.artifacts:
        path = os.path.join(run.path or "", name)
        if not os.path.isfile(path):
            continue  # listed but gone (deleted to save space): the document lists what it holds
        with open(path, "rb") as f:
            file_id = fs.put(f, filename=f"artifact://runs/{_id}/{name}", metadata=None, content_type=mimetypes.guess_type(name)[0])
        artifacts.append({"name": name, "file_id": file_id})
    doc: dict[str, Any] = {
        "_id": _id,
        "experiment": experiment,
        "format": MONGO_FORMAT,
        "command": run.command,
        "host": run.host,
        "start_time": run.start,
        "config": run.config,
        "meta": run.meta,
        "status": run.status,
        "resources": [list(r) for r in run.resources],
        "artifacts": artifacts,
        "captured_out": run.captured_out,
        "info": info,
        "heartbeat": run.heartbeat,
        "result": run.result,
    }
    if run.stop_time is not None:
        doc["stop_time"] = run.stop_time
    if run.fail_trace is not None:
        doc["fail_trace"] = run.fail_trace
    database["runs"].insert_one(doc)


def _put_source(fs: Any, base_dir: str, name: str, stored: str) -> list[Any]:
    """A source file in GridFS under MongoObserver's name (its absolute path), stored once per content."""
    with open(stored, "rb") as f:
        content = f.read()
    md5 = hashlib.md5(content).hexdigest()
    filename = os.path.join(base_dir, name)
    found = fs.find_one({"filename": filename, "md5": md5})
    file_id = found._id if found is not None else fs.put(content, filename=filename, md5=md5)
    return [name, file_id]
