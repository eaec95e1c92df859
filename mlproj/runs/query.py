"""Choosing, ordering and comparing recorded runs: `--where`, `--sort`, run references, groups."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mlproj.errors import MLProjError
from mlproj.runs.reader import read_run
from mlproj.runs.record import Run
from mlproj.util.goals import runs_goal
from mlproj.util.refs import run_folder
from mlproj.util.values import parse_value

# Sacred reads `true` as a string; in `--where` the lower-case spellings people type (JSON's and
# Python's) match True, False and None as well.
_JSON_SPELLINGS = {"true": True, "false": False, "null": None, "none": None}


def _matches(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, str) and wanted.lower() in _JSON_SPELLINGS and _matches(actual, _JSON_SPELLINGS[wanted.lower()]):
        return True
    if isinstance(actual, (int, float)) and isinstance(wanted, (int, float)) and not isinstance(actual, bool):
        try:
            return math.isclose(actual, wanted)
        except OverflowError:  # an integer past float's range: compared exactly, as Python compares int and float
            return actual == wanted
    return actual == wanted or str(actual) == str(wanted)


def filter_runs(runs: list[Run], where: Iterable[str] = (), status: str | None = None) -> list[Run]:
    """The runs whose config has every `key=value` of `where` (dotted keys for nested config; values
    read as Sacred reads them, see `mlproj.util.values`) and, when given, whose status is `status`
    (case-insensitive).

    Raises:
        MLProjError: on a `where` item without `=`.
    """
    conditions = []
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MLProjError(f"--where {item!r} is not key=value: write e.g. --where dataset=digits.")
        conditions.append((key.strip(), parse_value(value)))
    chosen = []
    for run in runs:
        flat = run.flat_config()
        if status and status.upper() not in (run.status.upper(), run.shown_status):
            continue
        if all(key in flat and _matches(flat[key], value) for key, value in conditions):
            chosen.append(run)
    return chosen


def sort_runs(runs: list[Run], key: str) -> list[Run]:
    """Best first by metric `key` (its best value, see `mlproj.runs.record`), else by config key or
    column `key` (id, start, duration, status) ascending; runs without the key go last.

    Raises:
        MLProjError: when no run has `key`.
    """

    def metric_value(run: Run) -> float | None:
        summary = run.summary(key)
        return None if summary is None else summary.best if summary.best is not None else summary.last

    columns = {"id": lambda r: r.id, "start": lambda r: r.start, "duration": lambda r: r.duration, "status": lambda r: r.status}
    if any(key in run.summaries for run in runs):
        descending = runs_goal(key, [run.info for run in runs]) != "min"
        value = metric_value
    elif key in columns:
        descending, value = False, columns[key]
    elif any(key in run.flat_config() for run in runs):
        descending, value = False, lambda r: r.flat_config().get(key)
    else:
        raise MLProjError(f"--sort {key}: no run has that metric or config key; metrics are {', '.join(metric_names(runs)) or 'none'}.")
    present = [r for r in runs if value(r) is not None]
    missing = [r for r in runs if value(r) is None]
    try:
        present.sort(key=value, reverse=descending)
    except TypeError:
        present.sort(key=lambda r: str(value(r)), reverse=descending)
    return present + missing


def find_run(runs: list[Run], ref: str) -> Run:
    """The run `ref` names: its id, its run_key, or (for a run dir) its folder path.

    Raises:
        MLProjError: when no run matches.
    """
    for run in runs:
        if str(run.id) == ref or run.run_key == ref or (run.path and os.path.abspath(ref) == run.path):
            return run
    ids = ", ".join(str(r.id) for r in runs[-10:]) or "none"
    raise MLProjError(f"no run {ref!r}: pass a run id or run_key (recent ids: {ids}); `mlproj runs` lists them.")


def resolve_runs(refs: list[str], runs_root: str | None, load_all: Callable[[], list[Run]]) -> list[Run]:
    """The runs `refs` name, in order. A run folder, or a run id in `runs_root`, is read alone
    (`mlproj.util.refs.run_folder`); any other ref (a run_key, a MongoDB id) is found among
    `load_all()`, called once and only then. With `runs_root` None (runs in MongoDB), every ref is.

    Raises:
        MLProjError: when a ref names no run (`find_run`).
    """
    folders = {ref: found for ref in refs if runs_root is not None and (found := run_folder(ref, runs_root)) is not None}
    all_runs = load_all() if len(folders) < len(refs) else []
    return [read_run(folders[ref]) if ref in folders else find_run(all_runs, ref) for ref in refs]


def metric_names(runs: Iterable[Run]) -> list[str]:
    """Every metric name some run logged, sorted (from the summaries: no series is read)."""
    return sorted({name for run in runs for name in run.summaries})


def differing_keys(runs: list[Run]) -> list[str]:
    """The dotted config keys whose values are not the same in all `runs` (missing counts as a value)."""
    flats = [run.flat_config() for run in runs]
    keys = sorted({key for flat in flats for key in flat})
    return [key for key in keys if len({json.dumps(f[key], sort_keys=True, default=str) if key in f else "<missing>" for f in flats}) > 1]


@dataclass
class Group:
    """Runs that differ only in the group-by key: their shared values and their metrics' mean and std."""

    values: dict[str, Any]  # the shared values of the other differing keys
    runs: list[Run]
    stats: dict[str, tuple[float, float, int]]  # metric -> (mean, std, n) of each run's best (else last)


def group_runs(runs: list[Run], by: str) -> list[Group]:
    """Group runs that differ only in config key `by` (e.g. `seed`), with mean ± std of each metric.

    The std is the sample standard deviation (0 for a group of one).

    Raises:
        MLProjError: when no run has config key `by`.
    """
    if not any(by in run.flat_config() for run in runs):
        raise MLProjError(f"--group-by {by}: no run has that config key; differing keys are {', '.join(differing_keys(runs)) or 'none'}.")
    others = [key for key in differing_keys(runs) if key != by]
    groups: dict[str, Group] = {}
    for run in runs:
        flat = run.flat_config()
        values = {key: flat.get(key) for key in others}
        group = groups.setdefault(json.dumps(values, sort_keys=True, default=str), Group(values, [], {}))
        group.runs.append(run)
    for group in groups.values():
        for name in metric_names(group.runs):
            summaries = [run.summary(name) for run in group.runs]
            points = [s.best if s.best is not None else s.last for s in summaries if s is not None]
            if points:
                std = statistics.stdev(points) if len(points) > 1 else 0.0
                group.stats[name] = (statistics.fmean(points), std, len(points))
    return list(groups.values())
