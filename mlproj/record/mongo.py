"""MongoDB as a best-effort copy of the run record: it never stops, stalls or fails training.

Sacred's observers are the wrong shape for a database that may be down: `MongoObserver` raises
at start (the run fails) and retries each final save for many seconds; `QueuedMongoObserver`
retries forever in its thread and its end-of-run `join()` waits forever (Sacred #434, #566).
`BackgroundMongoObserver` sends every event from one daemon thread instead, and on the first
error prints ONE warning, stops sending and lets the run finish: the file record under the runs
dir is complete and `mlproj sync` can upload it later. The end of a run waits for the database at
most `end_wait_s` seconds.

One id in both records (Sacred #540): before the run starts, `next_free_id` raises the runs dir's
next id past the largest `_id` in MongoDB; the file observer (it goes first) numbers the run and the
MongoDB document takes the same `_id`. Should another machine take that `_id` in between, the
document gets MongoDB's next one instead; both records carry the same `info.run_key`.

The URI's password is never printed or recorded: messages show `redact_uri(uri)`.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from sacred.observers import MongoObserver, RunObserver

from mlproj.util.mongo import next_run_id
from mlproj.util.uri import mongo_db_name, redact_uri, uri_password

logger = logging.getLogger("mlproj")

END_EVENTS = ("completed_event", "interrupted_event", "failed_event")
DEFAULT_TIMEOUT_MS = 3000  # server selection; a URI's own serverSelectionTimeoutMS wins


class _MongoCopy(MongoObserver):
    """Sacred's MongoObserver, but a failed write raises (the caller decides) instead of being
    retried for seconds, swallowed, or pickled into a failure folder."""

    def save(self) -> None:
        self.runs.update_one({"_id": self.run_entry["_id"]}, {"$set": self.run_entry})

    def final_save(self, attempts: int) -> None:
        self.runs.update_one({"_id": self.run_entry["_id"]}, {"$set": self.run_entry}, upsert=True)

    def artifact_event(self, name: str, filename: str, metadata: Any = None, content_type: Any = None) -> None:
        """Sacred's, except that an artifact saved again (last.pt every epoch) replaces its earlier
        copy in GridFS instead of adding one more."""
        for entry in [a for a in self.run_entry["artifacts"] if a["name"] == name]:
            self.fs.delete(entry["file_id"])
            self.run_entry["artifacts"].remove(entry)
        if content_type is None and filename.endswith(".pt"):
            content_type = "application/octet-stream"  # Sacred's guess fails on checkpoints, with a warning
        super().artifact_event(name, filename, metadata, content_type)


def _connect(uri: str, db_name: str) -> Any:
    import pymongo  # lazy: only runs with a MongoDB observer need pymongo (print_config imports this module)

    options = {} if "serverselectiontimeoutms" in uri.lower() else {"serverSelectionTimeoutMS": DEFAULT_TIMEOUT_MS}
    return pymongo.MongoClient(uri, **options)[db_name]


class BackgroundMongoObserver(RunObserver):
    """Copy the run into MongoDB from a background thread; see the module docstring.

    Args:
        uri: the MongoDB URI (may hold credentials; they are never printed).
        db_name: the database, default the one the URI names, else `sacred`.
        end_wait_s: the longest the end of a run waits for the database.
        connect: returns the pymongo database to write to (tests pass a mongomock one).
    """

    priority = 10  # after the file observer (20): the runs dir numbers the run

    def __init__(self, uri: str, db_name: str | None = None, *, end_wait_s: float = 5.0,
                 connect: Callable[[], Any] | None = None):
        self.shown_uri = redact_uri(uri)
        self._password = uri_password(uri)
        db_name = db_name or mongo_db_name(uri)
        self._connect = connect or (lambda: _connect(uri, db_name))
        self.end_wait_s = end_wait_s
        self.failure: str | None = None  # the one-line reason, once MongoDB failed
        self._queue: queue.Queue = queue.Queue()
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None
        self._copy: _MongoCopy | None = None
        self._database: Any = None
        self._warned = threading.Lock()

    def database(self) -> Any:
        """The pymongo database, connected on first use (pymongo connects lazily; nothing blocks here)."""
        if self._database is None:
            self._database = self._connect()
        return self._database

    def next_free_id(self) -> int:
        """One past the largest integer `_id` in the runs collection; 1 when empty or unreachable
        (the background copy then reports the outage, once)."""
        import pymongo.errors  # lazy: pymongo, as in _connect

        try:
            return next_run_id(self.database())
        except pymongo.errors.PyMongoError:
            return 1

    # ------------------------------------------------------------------ Sacred's events
    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):  # noqa: ANN001, ANN201
        self._thread = threading.Thread(target=self._work, name="mlproj-mongo", daemon=True)
        self._thread.start()
        # The file observer's folder name; Omniboard wants an integer.
        _id = int(_id) if str(_id).isdigit() else None
        self._put("started_event", ex_info=copy.deepcopy(ex_info), command=command, host_info=host_info,
                  start_time=start_time, config=copy.deepcopy(config), meta_info=copy.deepcopy(meta_info), _id=_id)
        return None

    def heartbeat_event(self, info, captured_out, beat_time, result):  # noqa: ANN001, ANN201
        self._put("heartbeat_event", info=copy.deepcopy(info), captured_out=captured_out, beat_time=beat_time,
                  result=result)

    def log_metrics(self, metrics_by_name, info):  # noqa: ANN001, ANN201
        self._put("log_metrics", metrics_by_name=copy.deepcopy(metrics_by_name), info=copy.deepcopy(info))

    def artifact_event(self, name, filename, metadata=None, content_type=None):  # noqa: ANN001, ANN201
        self._put("artifact_event", name=name, filename=filename, metadata=metadata, content_type=content_type)

    def resource_event(self, filename):  # noqa: ANN001, ANN201
        self._put("resource_event", filename=filename)

    def completed_event(self, stop_time, result):  # noqa: ANN001, ANN201
        self._end("completed_event", stop_time=stop_time, result=result)

    def interrupted_event(self, interrupt_time, status):  # noqa: ANN001, ANN201
        self._end("interrupted_event", interrupt_time=interrupt_time, status=status)

    def failed_event(self, fail_time, fail_trace):  # noqa: ANN001, ANN201
        self._end("failed_event", fail_time=fail_time, fail_trace=fail_trace)

    def join(self) -> None:
        """Sacred calls this at the very end; `_end` already waited (bounded)."""

    # ------------------------------------------------------------------ the background thread
    def _put(self, event: str, **kwargs: Any) -> None:
        if self.failure is None and self._thread is not None:
            self._queue.put((event, kwargs))

    def _end(self, event: str, **kwargs: Any) -> None:
        if self._thread is None:
            return
        self._queue.put((event, kwargs))
        if not self._ended.wait(self.end_wait_s) and self.failure is None:
            self._warn(f"did not answer within {self.end_wait_s:g} s at the end of the run")

    def _work(self) -> None:
        while True:
            name, kwargs = self._queue.get()
            if self.failure is None:
                try:
                    if self._copy is None:
                        import gridfs  # lazy: imports pymongo, as in _connect

                        database = self.database()
                        self._copy = _MongoCopy.__new__(_MongoCopy)
                        self._copy.initialize(database["runs"], gridfs.GridFS(database),
                                              metrics_collection=database["metrics"])
                    self._send(name, kwargs)
                except Exception as err:  # noqa: BLE001 - any failure of the copy ends the copy, not the run
                    self._warn(f"was not reached ({type(err).__name__}: {_first_line(err)})")
            if name in END_EVENTS:
                self._ended.set()
                return

    def _send(self, name: str, kwargs: dict[str, Any]) -> None:
        import pymongo.errors  # lazy: pymongo, as in _connect

        try:
            getattr(self._copy, name)(**kwargs)
        except pymongo.errors.DuplicateKeyError:
            if name != "started_event" or kwargs["_id"] is None:
                raise
            # Another machine took this id since next_free_id looked: let MongoDB number the run.
            getattr(self._copy, name)(**{**kwargs, "_id": None})

    def _warn(self, what: str) -> None:
        if not self._warned.acquire(blocking=False):
            return  # one warning per run, whichever thread saw the failure first
        message = (f"MongoDB at {self.shown_uri} {what}: training goes on and the run is recorded in the runs "
                   "dir only; upload it later with `mlproj sync`.")
        if self._password:
            message = message.replace(self._password, "***")
        self.failure = message
        logger.warning(message)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return text.split(", Timeout:")[0][:160]  # pymongo appends its whole topology description
