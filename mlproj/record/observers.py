"""The run observers: the file record under the runs dir, and MongoDB when `MONGODB_URI` is set.

`RunFolderObserver` writes exactly Sacred's FileStorageObserver layout (`runs/<id>/{run,config,
info,metrics}.json`, `cout.txt`, artifacts) with three changes that matter for long runs:
every JSON file is replaced atomically (a kill never leaves half a file), an artifact written again
(last.pt each epoch) is listed once, and metrics are kept in memory instead of re-reading
metrics.json at every heartbeat.

metrics.json grows with the run, and Sacred hands new scalars over at every heartbeat (10 s), so
rewriting it whole each time costs more and more (2.5% of a 100,000-step run, 6% of a 300,000-step
one, measured by `make bench`). It is written without indentation (json's C encoder, ~10x faster).
A heartbeat rewrites it whenever the last rewrite was cheap (under `CHEAP_REWRITE_SECONDS`), so a
reader sees each heartbeat's metrics on ordinary runs; once rewriting costs more, a heartbeat skips
it while less than `METRICS_REWRITE_RATIO` times the last rewrite's duration has passed since it,
which bounds the cost at about 1/100 of the run's time whatever its length. The run's end
(completed, failed, interrupted) always writes it whole.

Beside it, `metrics_summary.json` (`mlproj.util.series`) holds each metric's count, first, last,
min and max with their steps, and the size and mtime of the metrics.json it describes, so
`mlproj runs` lists runs without reading their series. It is written after each metrics.json.

cout.txt holds every line as a terminal would show it (`collapse_redraws`, the experiment's
captured-output filter). Sacred's own observer only appends to cout.txt, which breaks a line whose
`\r` redraw was cut by a heartbeat; `save_cout` rewrites that line instead.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from sacred.observers import FileStorageObserver
from sacred.serializer import flatten
from sacred.utils import apply_backspaces_and_linefeeds

from mlproj.record.mongo import BackgroundMongoObserver
from mlproj.util.files import atomic_copy, atomic_write
from mlproj.util.series import SUMMARY_FILE, SUMMARY_VERSION, add_points

# A heartbeat rewrites metrics.json when its last rewrite took less than this, else only when
# METRICS_REWRITE_RATIO times the last rewrite's duration has passed. A rewrite includes two fsyncs
# (metrics.json and its summary, a few ms each on common disks); 20 ms is 0.2% of Sacred's 10-s beat.
CHEAP_REWRITE_SECONDS = 0.02
METRICS_REWRITE_RATIO = 100

RECORD_FILES = ("run.json", "config.json", "cout.txt", "metrics.json", "info.json", SUMMARY_FILE)


class RunFolderObserver(FileStorageObserver):
    """Sacred's file storage, written atomically; see the module docstring."""

    # A new run's id is at least this: `attach_observers` raises it past the ids MongoDB already
    # holds, so a run recorded to both gets one id in both and no folder clash (Sacred #540).
    first_free_id = 1

    # Private, because Sacred has no public way to choose a run's id (test_record_sacred_api.py checks it).
    def _maximum_existing_run_id(self) -> int:
        return max(super()._maximum_existing_run_id(), self.first_free_id - 1)

    def started_event(self, *args: Any, **kwargs: Any) -> Any:
        self._metrics: dict[str, dict[str, list]] = {}
        self._summaries: dict[str, dict[str, Any] | None] = {}
        self._metrics_written_at, self._metrics_write_seconds, self._metrics_pending = 0.0, 0.0, False
        self._cout_written = ""
        return super().started_event(*args, **kwargs)

    def save_cout(self) -> None:
        """Make cout.txt equal the captured text: append what is new and, when the filter redrew
        the last (unfinished) line since the last write, rewrite from that line on."""
        written, cout = self._cout_written, self.cout
        keep = len(written)
        while keep and not cout.startswith(written[:keep]):
            keep = written.rfind("\n", 0, keep - 1) + 1  # back to the start of the redrawn line
        path = os.path.join(self.dir, "cout.txt")
        with open(path, "r+b" if os.path.exists(path) else "wb") as f:
            f.seek(len(written[:keep].encode("utf-8", "replace")))
            f.truncate()
            f.write(cout[keep:].encode("utf-8", "replace"))
        self._cout_written = cout

    def save_json(self, obj: Any, filename: str) -> None:
        def write(f: Any) -> None:
            json.dump(flatten(obj), f, sort_keys=True, indent=2)

        atomic_write(os.path.join(self.dir, filename), write, mode="w")

    def save_file(self, filename: str, target_name: str | None = None) -> None:
        target = os.path.join(self.dir, target_name or os.path.basename(filename))
        if os.path.exists(target) and os.path.samefile(filename, target):
            return  # the checkpoint was written into the run folder itself
        if os.path.basename(target) in RECORD_FILES:
            raise FileExistsError(f"artifact name {os.path.basename(target)} would overwrite the run record")
        atomic_copy(filename, target)

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
            self._summaries[name] = add_points(self._summaries.get(name), new["steps"], [_number(v) for v in new["values"]])
        self._metrics_pending = True
        cheap = self._metrics_write_seconds < CHEAP_REWRITE_SECONDS
        if cheap or time.monotonic() - self._metrics_written_at >= METRICS_REWRITE_RATIO * self._metrics_write_seconds:
            self.write_metrics()

    def write_metrics(self) -> None:
        """Rewrite metrics.json with every scalar logged so far (if any arrived since the last write)."""
        if not self._metrics_pending:
            return
        start = time.monotonic()
        text = json.dumps(self._metrics, sort_keys=True, default=_number)  # no indent: the C encoder
        path = os.path.join(self.dir, "metrics.json")
        atomic_write(path, lambda f: f.write(text), mode="w")
        self._write_summary(path)
        self._metrics_written_at = time.monotonic()
        self._metrics_write_seconds = self._metrics_written_at - start
        self._metrics_pending = False

    def _write_summary(self, metrics_path: str) -> None:
        """metrics_summary.json for the metrics.json just written (named by its size and mtime)."""
        st = os.stat(metrics_path)
        summary = {
            "version": SUMMARY_VERSION,
            "metrics_json": {"size": st.st_size, "mtime_ns": st.st_mtime_ns},
            "metrics": {name: s if s is not None else {"count": 0} for name, s in self._summaries.items()},
        }
        text = json.dumps(summary, sort_keys=True)
        atomic_write(os.path.join(self.dir, SUMMARY_FILE), lambda f: f.write(text), mode="w")

    def completed_event(self, *args: Any, **kwargs: Any) -> None:
        try:
            self.write_metrics()
        finally:  # the run's status is written even when its metrics cannot be
            super().completed_event(*args, **kwargs)

    def interrupted_event(self, *args: Any, **kwargs: Any) -> None:
        try:
            self.write_metrics()
        finally:  # the run's status is written even when its metrics cannot be
            super().interrupted_event(*args, **kwargs)

    def failed_event(self, *args: Any, **kwargs: Any) -> None:
        try:
            self.write_metrics()
        finally:  # the run's status is written even when its metrics cannot be
            super().failed_event(*args, **kwargs)


def collapse_redraws(text: str) -> str:
    """Sacred's captured-output filter: each finished line as a terminal shows it (a `\r` returns
    to the line's start, a `\b` goes back one character), the unfinished last line kept as it is.

    Sacred applies the filter at every heartbeat to what was captured so far; collapsing only
    finished lines means a redraw cut by a heartbeat is collapsed whole once its line ends.
    """
    head, newline, tail = text.rpartition("\n")
    if not newline:
        return text
    lines = head.split("\n")
    for i, line in enumerate(lines):
        if "\r" in line or "\b" in line:
            # The blanks a progress bar clears itself with are not part of the line.
            lines[i] = apply_backspaces_and_linefeeds(line + "\n")[:-1].rstrip(" ")
    return "\n".join(lines) + "\n" + tail


def _number(value: Any) -> Any:
    """A value `_run.log_scalar` was given that json cannot write (a 0-d tensor, a numpy scalar)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def mongo_observer(uri: str) -> Any:
    """The MongoDB copy of the run (`mlproj.record.mongo.BackgroundMongoObserver`): events go through a
    background thread, and an outage costs one warning, never the run or its end."""
    return BackgroundMongoObserver(uri)
