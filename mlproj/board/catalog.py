"""What the board knows of the runs dir: every run, read once and kept up to date cheaply.

The first look reads every run through `mlproj.runs.reader.read_runs` (its summary cache makes a
second start fast). After that, at most every `CHECK_S` seconds, a look lists the runs dir and
re-reads only what can have changed: run folders that are new, those that are gone, runs whose
run.json changed since (its mtime or size: a reused id, a plain-Sacred QUEUED record rewritten), and
runs whose record said RUNNING whose metrics.json changed. Ten thousand runs cost one directory
listing and a `stat` per run (two per running run) per check.

The runs table's rows (`mlproj.runs.rows.run_rows`) of a query (filter and sort) are kept for the
snapshot they were made from, so paging through a large table does not build them again; while
any run is RUNNING, tables are made again after CHECK_S, as that run turns PROBABLY_DEAD when its
heartbeat stops, without any file changing.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mlproj.errors import MLProjError
from mlproj.runs.query import filter_runs, sort_runs
from mlproj.runs.reader import metrics_key, read_run, read_runs, read_summaries, run_ids
from mlproj.runs.record import Run
from mlproj.runs.rows import listed_metrics, run_rows
from mlproj.util.goals import best_value, runs_goal
from mlproj.util.table import cell

CHECK_S = 2.0  # how stale the table may be: a look within this time of the last check trusts it
ROWS_KEPT = 100_000  # rows of the tables of recent queries kept for paging, all together (a few KB per row with every metric)


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
    unreadable: list[tuple[int, str]] = field(default_factory=list)  # run folders left out: (id, why)


class Catalog:
    """The runs of one runs dir, for a server that answers many requests (thread-safe).

    A run folder whose record cannot be read (a damaged run.json, or a finished run's damaged
    metrics.json) is left out and listed in `unreadable`, so one bad folder costs its own line, not
    every page; it is read again when its run.json changes. A RUNNING run's metrics.json that cannot
    be parsed is being rewritten (plain Sacred rewrites it in place): its last summaries are kept and
    it is read again at the next check.

    Args:
        runs_dir: the folder of run folders.
        clock: seconds, monotonic (tests pass their own to skip the wait between checks).
    """

    def __init__(self, runs_dir: str, *, clock: Callable[[], float] = time.monotonic):
        self.runs_dir = os.path.abspath(runs_dir)
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[int, Run] = {}
        self._stamps: dict[int, tuple[Any, ...]] = {}  # each run's files as last read (`_files_stamp`)
        self._entries: dict[int, dict[str, Any]] = {}  # each run's summaries and the metrics.json they describe (`read_summaries`)
        self._unreadable: dict[int, str] = {}  # run id: why its record cannot be read
        self._checked: float | None = None
        self.version = 0  # counts the snapshots; tables made from an older one are dropped
        self._tables: OrderedDict[tuple[int, Query], tuple[float | None, Table]] = OrderedDict()  # (expiry, table)

    # ------------------------------------------------------------------ the runs
    def runs(self) -> list[Run]:
        """Every readable run, by id, as of at most CHECK_S seconds ago.

        Raises:
            MLProjError: when the runs dir is gone.
        """
        return self._snapshot()[1]

    @property
    def unreadable(self) -> dict[int, str]:
        """The run folders left out, by id: why each cannot be read (as of the last check)."""
        with self._lock:
            return dict(self._unreadable)

    def _snapshot(self) -> tuple[int, list[Run]]:
        """(version, runs): the runs and the number of the snapshot they are, taken together."""
        with self._lock:
            now = self._clock()
            if self._checked is None:
                self._load()
            elif now - self._checked >= CHECK_S:
                self._refresh()
            self._checked = now
            return self.version, list(self._runs.values())

    def run(self, run_id: int) -> Run | None:
        """Run `run_id` read now (a RUNNING run's page shows its latest state), with the summaries
        the catalog holds while its metrics.json is unchanged; None when the runs dir holds no such run.

        Raises:
            MLProjError: when its record is damaged.
        """
        folder = self._folder(run_id)
        if folder is None:
            return None
        run = read_run(folder)
        with self._lock:
            entry, known = self._entries.get(run_id), self._runs.get(run_id)
        run.load_summaries = lambda: self._kept_summaries(run_id, run, entry, known)
        return run

    def _kept_summaries(self, run_id: int, run: Run, entry: dict[str, Any] | None, known: Run | None) -> dict[str, dict[str, Any]]:
        """`_read_summaries` for a request, its new cache entry kept for the next one."""
        summaries, new = _read_summaries(run, entry, known)
        if new and new is not entry:
            with self._lock:
                self._entries[run_id] = new
        return summaries

    def _folder(self, run_id: int) -> str | None:
        """Run `run_id`'s folder: one holding run.json, inside the runs dir even through links; None otherwise."""
        folder = os.path.join(self.runs_dir, str(run_id))
        if not os.path.isfile(os.path.join(folder, "run.json")):
            return None
        inside = os.path.realpath(self.runs_dir) + os.sep
        return folder if os.path.realpath(folder).startswith(inside) else None

    def _load(self) -> None:
        """The first look: every run (`read_runs`: summaries through its cache, in worker
        processes), else, when some record is damaged, each run on its own (`_refresh`)."""
        stamps = {i: _files_stamp(folder, metrics=True) for i, folder in self._listed().items()}  # before reading: a run
        # that writes meanwhile has a newer stamp at the next check, and is read again
        try:
            runs = [run for run in read_runs(self.runs_dir) if run.id in stamps]
        except MLProjError:
            self._refresh()
            return
        for run in runs:
            self._runs[run.id] = run
            record, metrics = stamps[run.id]
            self._stamps[run.id] = (record, metrics if run.status == "RUNNING" else None)
            key = metrics_key(str(run.path)) if metrics is not None else None
            if key is not None and tuple(key.values()) == metrics:
                self._entries[run.id] = {**key, "metrics": run.summaries}
        self.version += 1

    def _listed(self) -> dict[int, str]:
        """The run folders of the runs dir now, by id (see `_folder`).

        Raises:
            MLProjError: when the runs dir is gone.
        """
        if not os.path.isdir(self.runs_dir):
            raise MLProjError(f"runs dir {self.runs_dir} is gone: start mlproj board on the folder your runs are in.")
        return {i: folder for i in run_ids(self.runs_dir) if (folder := self._folder(i)) is not None}

    def _refresh(self) -> None:
        present = self._listed()
        unreadable = dict(self._unreadable)
        changed = False
        for run_id in [i for i in self._runs if i not in present]:
            del self._runs[run_id]
            changed = True
        for gone in [i for i in self._stamps if i not in present]:
            self._stamps.pop(gone)
            self._entries.pop(gone, None)
            self._unreadable.pop(gone, None)
        for run_id, folder in sorted(present.items()):
            known = self._runs.get(run_id)
            stamp = _files_stamp(folder, metrics=known is None or known.status == "RUNNING")
            if stamp[0] is None or self._stamps.get(run_id) == stamp:
                continue  # no run.json yet (a run starting), or a run that wrote nothing new
            try:
                run = read_run(folder)
                summaries, new = _read_summaries(run, self._entries.get(run_id), known)  # now, where a damaged file is caught
            except MLProjError as err:
                if known is None:  # a new run that cannot be read: listed as unreadable, read when it changes
                    self._unreadable[run_id] = str(err)
                    self._stamps[run_id] = stamp
                continue  # a known run caught mid-write (plain Sacred rewrites its JSON in place): read it at the next check
            run.load_summaries = lambda summaries=summaries: summaries
            if new:
                self._entries[run_id] = new
            self._unreadable.pop(run_id, None)
            self._runs[run_id] = run
            # A RUNNING run whose metrics.json could not be parsed (new is False) is read again at the next check.
            self._stamps[run_id] = stamp if run.status == "RUNNING" and new is not False else (stamp[0], None)
            changed = True
        if changed or self._unreadable != unreadable:  # the tables name the unreadable folders too
            self._runs = dict(sorted(self._runs.items()))
            self.version += 1

    # ------------------------------------------------------------------ the table
    def table(self, query: Query) -> Table:
        """The runs table of `query`: `mlproj runs`' rows (`run_rows`) of the runs that pass its
        filters, in its order, and the run folders left out (`unreadable`).

        Raises:
            MLProjError: on a `key=value` filter without `=`, or a sort column no run has.
        """
        version, runs = self._snapshot()
        key = (version, query)
        with self._lock:
            expires, table = self._tables.get(key, (0.0, None))
            if table is not None and (expires is None or self._clock() < expires):
                self._tables.move_to_end(key)
                return table
            unreadable = sorted(self._unreadable.items())
        table = _make_table(runs, query, unreadable)
        # While a run is RUNNING, any table may change without a file changing: its status is judged
        # again after CHECK_S (PROBABLY_DEAD when its heartbeat stopped; see the module's docstring).
        live = any(run.status == "RUNNING" for run in runs)
        with self._lock:
            self._tables[key] = (self._clock() + CHECK_S if live else None, table)
            # The oldest go first, the newest is kept whatever its size.
            while len(self._tables) > 1 and sum(len(kept.rows) for _, kept in self._tables.values()) > ROWS_KEPT:
                self._tables.popitem(last=False)
        return table


def _read_summaries(run: Run, entry: dict[str, Any] | None, known: Run | None) -> tuple[dict[str, dict[str, Any]], Any]:
    """`run`'s summaries, through the cache entry `entry` (see `read_summaries`), and the entry to
    keep (None: none to keep; False: the summaries are the last ones read, `entry`'s or `known`'s,
    none before the first, as `run` is RUNNING and its metrics.json, being rewritten, cannot be parsed).

    Raises:
        MLProjError: when a finished run's metrics.json is damaged.
    """
    try:
        return read_summaries(str(run.path), entry)
    except MLProjError:
        if run.status != "RUNNING":
            raise
        last = entry["metrics"] if entry is not None else known.summaries if known is not None else {}
        return last, False


def _files_stamp(folder: str | None, *, metrics: bool) -> tuple[Any, ...]:
    """What changes when a run writes its record: run.json's mtime and size, and with `metrics`
    (a running run's) metrics.json's size and mtime."""
    try:
        st = os.stat(os.path.join(folder or "", "run.json"))
        record: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        record = None
    key = metrics_key(folder or "") if metrics else None
    return record, None if key is None else tuple(key.values())


def _make_table(runs: list[Run], query: Query, unreadable: list[tuple[int, str]]) -> Table:
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
    return Table(columns, rows, best_cells(rows, columns, chosen), total, unreadable)


def _searchable(row: dict[str, Any], run: Run) -> str:
    """The text a search looks through: the row's cells, the run's name, run_key and comment."""
    return " ".join([*(cell(v) for v in row.values()), run.name, run.run_key or "", run.comment]).lower()


def _sorted(rows: list[dict[str, Any]], runs: dict[Any, Run], query: Query) -> list[dict[str, Any]]:
    """`rows` in `query`'s order. A `METRIC best` column is ordered as `mlproj runs --sort` orders
    it (`sort_runs`: best first, which is this column's "descending"); any other column by its
    values (`_sort_key`), ascending, descending reversed. Rows without a value stay last either way."""
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
        if column.endswith(" best"):
            value = best_value((row.get(column) for row in rows), runs_goal(column.removesuffix(" best"), infos))
            if value is not None:
                best[column] = value
    return best
