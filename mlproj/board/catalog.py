"""What the board knows of the runs dir: every run, read once and kept up to date cheaply.

The first look reads every run through `mlproj.runs.reader.read_runs` (its summary cache makes a
second start fast). After that, at most every `CHECK_S` seconds, a look lists the runs dir and
re-reads only what can have changed: run folders that are new, those that are gone, runs whose
run.json changed since (its mtime or size: a reused id, a plain-Sacred QUEUED record rewritten), and
runs whose record said RUNNING whose metrics.json changed. Ten thousand runs cost one directory
listing and a `stat` per run (two per running run) per check.

The runs table's rows (`mlproj.runs.rows.run_rows`) of a query (filter and sort) are kept for the
snapshot they were made from, so paging through a large table does not build them again; a table
that shows a RUNNING run is made again after CHECK_S, as that run turns PROBABLY_DEAD when its
heartbeat stops, without any file changing.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mlproj.errors import MLProjError
from mlproj.runs.query import filter_runs, sort_runs
from mlproj.runs.reader import metrics_key, read_run, read_runs, run_ids
from mlproj.runs.record import Run
from mlproj.runs.rows import listed_metrics, run_rows
from mlproj.util.goals import runs_goal
from mlproj.util.table import cell

CHECK_S = 2.0  # how stale the table may be: a look within this time of the last check trusts it
QUERIES_KEPT = 16  # tables of recent queries kept for paging


@dataclass(frozen=True)
class Query:
    """A view of the runs table: filters (status, `key=value`s, text), sort column and direction,
    and whether every metric or only the benchmark metric gets columns."""

    status: str = ""
    where: tuple[str, ...] = ()
    text: str = ""
    sort: str = "id"
    descending: bool = True
    all_metrics: bool = False


@dataclass
class Table:
    """The rows of a query, in order, and per ranked `... best` column the best value among them."""

    columns: list[str]
    rows: list[dict[str, Any]]
    best: dict[str, Any]
    total: int  # runs in the runs dir


class Catalog:
    """The runs of one runs dir, for a server that answers many requests (thread-safe).

    Args:
        runs_dir: the folder of run folders.
        clock: seconds, monotonic (tests pass their own to skip the wait between checks).
    """

    def __init__(self, runs_dir: str, *, clock: Callable[[], float] = time.monotonic):
        self.runs_dir = os.path.abspath(runs_dir)
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[int, Run] = {}
        self._stamps: dict[int, tuple[Any, ...]] = {}  # each run's files as last read (`_stamp`)
        self._checked: float | None = None
        self.version = 0  # counts the snapshots; tables made from an older one are dropped
        self._tables: OrderedDict[tuple[int, Query], tuple[float | None, Table]] = OrderedDict()  # (expiry, table)

    # ------------------------------------------------------------------ the runs
    def runs(self) -> list[Run]:
        """Every run, by id, as of at most CHECK_S seconds ago.

        Raises:
            MLProjError: when the runs dir is gone or a record is damaged.
        """
        with self._lock:
            now = self._clock()
            if self._checked is None:
                self._runs = {run.id: run for run in read_runs(self.runs_dir)}
                self._stamps = {i: _stamp(run.path, metrics=run.status == "RUNNING") for i, run in self._runs.items()}
                self.version += 1
            elif now - self._checked >= CHECK_S:
                self._refresh()
            self._checked = now
            return list(self._runs.values())

    def run(self, run_id: int) -> Run | None:
        """Run `run_id` read now (a RUNNING run's page shows its latest state); None when the runs
        dir holds no such run.

        Raises:
            MLProjError: when its record is damaged.
        """
        folder = os.path.join(self.runs_dir, str(run_id))
        if not os.path.isfile(os.path.join(folder, "run.json")):
            return None
        return read_run(folder)

    def _refresh(self) -> None:
        if not os.path.isdir(self.runs_dir):
            raise MLProjError(f"runs dir {self.runs_dir} is gone: start mlproj board on the folder your runs are in.")
        present = set(run_ids(self.runs_dir))
        changed = False
        for run_id in [i for i in self._runs if i not in present]:
            del self._runs[run_id]
            self._stamps.pop(run_id, None)
            changed = True
        for run_id in sorted(present):
            folder = os.path.join(self.runs_dir, str(run_id))
            known = self._runs.get(run_id)
            stamp = _stamp(folder, metrics=known is None or known.status == "RUNNING")
            if stamp[0] is None or self._stamps.get(run_id) == stamp:
                continue  # no run.json yet (a run starting), or a run that wrote nothing new
            try:
                run = read_run(folder)
            except MLProjError:
                continue  # caught mid-write (plain Sacred rewrites its JSON in place): read it at the next check
            self._runs[run_id] = run
            self._stamps[run_id] = stamp if run.status == "RUNNING" else (stamp[0], None)
            changed = True
        if changed:
            self._runs = dict(sorted(self._runs.items()))
            self.version += 1

    # ------------------------------------------------------------------ the table
    def table(self, query: Query) -> Table:
        """The runs table of `query`: `mlproj runs`' rows (`run_rows`) of the runs that pass its
        filters, in its order.

        Raises:
            MLProjError: on a `key=value` filter without `=`, or a sort column no run has.
        """
        runs = self.runs()
        key = (self.version, query)
        with self._lock:
            expires, table = self._tables.get(key, (0.0, None))
            if table is not None and (expires is None or self._clock() < expires):
                self._tables.move_to_end(key)
                return table
        table = _make_table(runs, query)
        # Its RUNNING runs' status is judged again after CHECK_S (see the module's docstring).
        live = any(row["status"] == "RUNNING" for row in table.rows)
        with self._lock:
            self._tables[key] = (self._clock() + CHECK_S if live else None, table)
            while len(self._tables) > QUERIES_KEPT:
                self._tables.popitem(last=False)
        return table


def _stamp(folder: str | None, *, metrics: bool) -> tuple[Any, ...]:
    """What changes when a run writes its record: run.json's mtime and size, and with `metrics`
    (a running run's) metrics.json's size and mtime."""
    try:
        st = os.stat(os.path.join(folder or "", "run.json"))
        record: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        record = None
    key = metrics_key(folder or "") if metrics else None
    return record, None if key is None else tuple(key.values())


def _make_table(runs: list[Run], query: Query) -> Table:
    total = len(runs)
    chosen = filter_runs(runs, query.where, query.status or None)
    names = None if query.all_metrics else listed_metrics(chosen)
    rows = run_rows(chosen, metrics=names)
    columns = list(rows[0]) if rows else ["id", "status", "start", "duration", "git"]
    if query.text:
        needle = query.text.lower()
        by_id = {run.id: run for run in chosen}
        rows = [row for row in rows if needle in _searchable(row, by_id[row["id"]])]
    rows = _sorted(rows, {run.id: run for run in chosen}, query)
    return Table(columns, rows, best_cells(rows, columns, chosen), total)


def _searchable(row: dict[str, Any], run: Run) -> str:
    """The text a search looks through: the row's cells, the run's name, run_key and comment."""
    return " ".join([*(cell(v) for v in row.values()), run.name, run.run_key or "", run.comment]).lower()


def _sorted(rows: list[dict[str, Any]], runs: dict[Any, Run], query: Query) -> list[dict[str, Any]]:
    """`rows` in `query`'s order. A `METRIC best` column, an id, start, duration, status or config
    column is ordered by `mlproj runs --sort` (`sort_runs`: best first for a metric, else
    ascending); descending reverses it. Any other column (a `last`, git) is ordered by its values.
    Rows without a value stay last either way."""
    column = query.sort
    if not rows or column not in rows[0]:
        return rows
    if column.endswith(" best"):
        order = sort_runs([runs[row["id"]] for row in rows], column.removesuffix(" best"))
        by_id = {row["id"]: row for row in rows}
        ordered = [by_id[run.id] for run in order]
        ascending = False  # sort_runs puts the best first: that is this column's "descending"
    else:
        ordered = sorted((r for r in rows if r.get(column) is not None), key=lambda r: _sort_key(r[column]))
        ordered += [r for r in rows if r.get(column) is None]
        ascending = True
    present = [r for r in ordered if r.get(column) is not None]
    missing = [r for r in ordered if r.get(column) is None]
    if query.descending == ascending:
        present.reverse()
    return present + missing


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers, then times, then text, each in its own order (a config column may hold several kinds)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return 0, value
    if isinstance(value, (datetime, timedelta)):
        return 1, value
    return 2, cell(value)


def best_cells(rows: list[dict[str, Any]], columns: list[str], runs: list[Run]) -> dict[str, Any]:
    """Per `METRIC best` column of a table, the best value among `rows`, as `runs_goal` judges the metric."""
    best = {}
    infos = [run.info for run in runs]
    for column in columns:
        if not column.endswith(" best"):
            continue
        values = [row[column] for row in rows if isinstance(row.get(column), (int, float))]
        goal = runs_goal(column.removesuffix(" best"), infos)
        if values and goal is not None:
            best[column] = min(values) if goal == "min" else max(values)
    return best
