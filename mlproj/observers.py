"""The run observers: the file record under the runs dir, and MongoDB when `MONGODB_URI` is set.

`RunFolderObserver` writes exactly Sacred's FileStorageObserver layout (`runs/<id>/{run,config,
info,metrics}.json`, `cout.txt`, artifacts) with three changes that matter for long runs:
every JSON file is replaced atomically (a kill never leaves half a file), an artifact written again
(last.pt each epoch) is listed once, and metrics are kept in memory instead of re-reading
metrics.json at every heartbeat.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from queue import Queue
from typing import Any

from sacred.observers import FileStorageObserver
from sacred.observers import QueuedMongoObserver as SacredQueuedMongoObserver
from sacred.observers.queue import WrappedEvent
from sacred.serializer import flatten
from sacred.utils import IntervalTimer


def _atomic_write(path: str, write: Any, mode: str = "w") -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class RunFolderObserver(FileStorageObserver):
    """Sacred's file storage, written atomically; see the module docstring."""

    # A new run's id is at least this: `attach_observers` raises it past the ids MongoDB already
    # holds, so a run recorded to both gets one id in both and no folder clash (Sacred #540).
    first_free_id = 1

    def _maximum_existing_run_id(self) -> int:
        return max(super()._maximum_existing_run_id(), self.first_free_id - 1)

    def started_event(self, *args: Any, **kwargs: Any) -> Any:
        self._metrics: dict[str, dict[str, list]] = {}
        return super().started_event(*args, **kwargs)

    def save_json(self, obj: Any, filename: str) -> None:
        def write(f: Any) -> None:
            json.dump(flatten(obj), f, sort_keys=True, indent=2)

        _atomic_write(os.path.join(self.dir, filename), write)

    def save_file(self, filename: str, target_name: str | None = None) -> None:
        target = os.path.join(self.dir, target_name or os.path.basename(filename))
        if os.path.exists(target) and os.path.samefile(filename, target):
            return  # the checkpoint was written into the run folder itself
        if os.path.basename(target) in ("run.json", "config.json", "cout.txt", "metrics.json", "info.json"):
            raise FileExistsError(f"artifact name {os.path.basename(target)} would overwrite the run record")

        def copy(f: Any) -> None:
            with open(filename, "rb") as source:
                shutil.copyfileobj(source, f)

        _atomic_write(target, copy, mode="wb")

    def artifact_event(self, name: str, filename: str, metadata: Any = None, content_type: Any = None) -> None:
        self.save_file(filename, name)
        if name not in self.run_entry["artifacts"]:
            self.run_entry["artifacts"].append(name)
            self.save_json(self.run_entry, "run.json")

    def log_metrics(self, metrics_by_name: dict[str, Any], info: Any) -> None:
        for name, new in metrics_by_name.items():
            series = self._metrics.setdefault(name, {"steps": [], "timestamps": [], "values": []})
            series["steps"] += new["steps"]
            series["values"] += new["values"]
            series["timestamps"] += [ts.isoformat() for ts in new["timestamps"]]
        self.save_json(self._metrics, "metrics.json")


def mongo_db_name(uri: str) -> str:
    """The database named in a MongoDB URI, or `sacred`."""
    from pymongo.uri_parser import parse_uri

    return parse_uri(uri).get("database") or "sacred"


def mongo_observer(uri: str, failure_dir: str) -> QueuedMongoObserver:
    """A queued MongoDB observer for `uri`; see `QueuedMongoObserver`.

    It runs after the file observer (priority 10 < 20), so the run takes the file record's id.
    Server selection gives up after 5 s unless the URI sets `serverSelectionTimeoutMS`.
    """
    options = {} if "serverselectiontimeoutms" in uri.lower() else {"serverSelectionTimeoutMS": 5000}
    return QueuedMongoObserver(url=uri, db_name=mongo_db_name(uri), failure_dir=failure_dir, priority=10, **options)


class QueuedMongoObserver(SacredQueuedMongoObserver):
    """Sacred's QueuedMongoObserver, made to neither crash nor stall a run when MongoDB is away.

    Sacred's version inserts the run synchronously at start (an outage fails the run) and, at the
    end, waits forever for its queue to drain. Here a failed insert is queued and retried like any
    other event; at the end the queue gets `flush_timeout` seconds, then what is still unsaved (the
    run document) is pickled into `failure_dir` as Sacred's MongoObserver does, with a warning
    naming `mlproj sync`, which copies the complete file record into MongoDB later. The worker
    thread is a daemon, so a hung server cannot keep the process alive.
    """

    flush_timeout = 30.0  # seconds the end of a run waits for MongoDB

    def __init__(self, *args: Any, failure_dir: str, interval: float = 2.0, retry_interval: float = 5.0, **kwargs: Any):
        super().__init__(*args, interval=interval, retry_interval=retry_interval, failure_dir=failure_dir, **kwargs)
        self.failure_dir = failure_dir

    def next_free_id(self) -> int:
        """One past the largest integer `_id` in the runs collection (1 when empty or unreachable)."""
        import pymongo.errors

        try:
            last = self._covered_observer.runs.find_one({"_id": {"$type": "int"}}, sort=[("_id", -1)], projection={"_id": 1})
        except pymongo.errors.PyMongoError:
            return 1
        return last["_id"] + 1 if last else 1

    def started_event(self, *args: Any, **kwargs: Any) -> Any:
        import pymongo.errors

        if isinstance(kwargs.get("_id"), str) and kwargs["_id"].isdigit():
            kwargs["_id"] = int(kwargs["_id"])  # the file observer's folder name: Omniboard wants an integer
        self._queue = Queue()
        self._stop_worker_event, self._worker = IntervalTimer.create(self._run, interval=self._interval)
        self._worker.daemon = True
        self._worker.start()
        try:
            return self._covered_observer.started_event(*args, **kwargs)
        except pymongo.errors.PyMongoError as err:
            print(f"warning: MongoDB did not take the run at start ({type(err).__name__}); retrying in the background", file=sys.stderr)
            self._queue.put(WrappedEvent("started_event", args, kwargs))  # before any later event
            return kwargs.get("_id")

    def _run(self) -> None:
        """Sacred's queue worker, except that a failing event is retried only until the run has ended
        and `join` gave up waiting (Sacred's retries forever)."""
        while not self._queue.empty():
            event = self._queue.get()
            method = getattr(self._covered_observer, event.name, None)
            while method is not None:
                try:
                    method(*event.args, **event.kwargs)
                    break
                except Exception:
                    if self._stop_worker_event.wait(self._retry_interval):
                        return  # join() gave up: the rest is in failure_dir and the run folder
            self._queue.task_done()

    def join(self) -> None:
        if self._queue is None:
            return
        deadline = time.monotonic() + self.flush_timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop_worker_event.set()
        if self._queue.unfinished_tasks:
            self._dump_unsaved()
        else:
            self._worker.join(timeout=10)

    def _dump_unsaved(self) -> None:
        os.makedirs(self.failure_dir, exist_ok=True)
        run_entry = self._covered_observer.run_entry or {}
        path = os.path.join(self.failure_dir, f"sacred_mongo_fail_{run_entry.get('_id')}_{os.getpid()}.pickle")
        with open(path, "wb") as f:
            pickle.dump(run_entry, f)
        print(
            f"warning: MongoDB did not answer within {self.flush_timeout:.0f} s; the run document is in {path}. "
            "The run folder is complete: copy it into MongoDB later with `mlproj sync RUNS_DIR --mongo URI`.",
            file=sys.stderr,
        )
