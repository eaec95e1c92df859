"""The small summary of a metric series that stands in for the series when runs are listed.

A summary holds, per metric, how many finite numbers were logged and the first, last, smallest
and largest of them with their steps. The observer that writes metrics.json keeps one up to date
(`SUMMARY_FILE` beside it); a reader of a run without one (recorded by plain Sacred) makes it from
metrics.json once. Both use `add_points`, so the two agree. Ties keep the earliest step, as
Python's `min`/`max` do over the series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# Written beside metrics.json in a run folder; neither Sacred nor Omniboard reads it.
SUMMARY_FILE = "metrics_summary.json"
SUMMARY_VERSION = 1

FIELDS = ("count", "first", "first_step", "last", "last_step", "min", "min_step", "max", "max_step")


def add_points(summary: dict[str, Any] | None, steps: Sequence[Any], values: Sequence[Any]) -> dict[str, Any] | None:
    """`summary` (a dict of FIELDS, or None for an empty series) updated with new (step, value) points.

    Values that are not finite numbers (NaN, inf, text) are left out, as `Run.summary` leaves them out.
    Returns the updated summary (the same dict when one was given), None while nothing counted.
    """
    n = min(len(steps), len(values))
    steps, values = steps[:n], values[:n]
    # Long series of plain finite numbers (nearly every one) are summarized by C loops; a sum
    # that is not finite means an inf or NaN somewhere (or an overflow), which the slow path sorts out.
    if n and set(map(type, values)) <= {float, int} and math.isfinite(sum(values)):
        low, high = min(values), max(values)
        chunk = {"count": n, "first": values[0], "first_step": steps[0], "last": values[-1], "last_step": steps[-1],
                 "min": low, "min_step": steps[values.index(low)], "max": high, "max_step": steps[values.index(high)]}
    else:
        chunk = None
        for step, value in zip(steps, values, strict=True):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            if chunk is None:
                chunk = {"count": 0, "first": value, "first_step": step, "min": value, "min_step": step, "max": value, "max_step": step}
            chunk["count"] += 1
            chunk["last"], chunk["last_step"] = value, step
            if value < chunk["min"]:
                chunk["min"], chunk["min_step"] = value, step
            if value > chunk["max"]:
                chunk["max"], chunk["max_step"] = value, step
    return _merge(summary, chunk)


def _merge(summary: dict[str, Any] | None, later: dict[str, Any] | None) -> dict[str, Any] | None:
    """The summary of a series followed by more points (`later`); ties keep the earlier step."""
    if summary is None or later is None:
        return later if summary is None else summary
    summary["count"] += later["count"]
    summary["last"], summary["last_step"] = later["last"], later["last_step"]
    if later["min"] < summary["min"]:
        summary["min"], summary["min_step"] = later["min"], later["min_step"]
    if later["max"] > summary["max"]:
        summary["max"], summary["max_step"] = later["max"], later["max_step"]
    return summary


def summarize_series(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The summary of every metric in a metrics.json-shaped dict ({name: {steps, values, ...}})."""
    summaries = {}
    for name, series in metrics.items():
        summary = add_points(None, series.get("steps", []), series.get("values", []))
        summaries[name] = summary if summary is not None else {"count": 0}
    return summaries


def downsample(steps: Sequence[Any], values: Sequence[Any], buckets: int) -> tuple[list[Any], list[float]]:
    """At most about `2 * buckets` points of a series that draw like the whole of it.

    The series is cut into `buckets` runs of consecutive points; each keeps its smallest and its
    largest finite value (in step order), so a spike inside a bucket stays visible where an average
    or every n-th point would hide it. The first and last points are always kept; values that are
    not finite numbers are left out. A series of at most `2 * buckets` points comes back whole.

    Returns:
        (steps, values) of the kept points, as plain lists (ready for JSON).
    """
    n = min(len(steps), len(values))
    kept, finite = downsample_indices(values[:n], buckets)
    if hasattr(steps, "tolist"):  # a numpy array: plain numbers out, as from a list
        return steps[kept].tolist(), finite[kept].tolist()
    return [steps[i] for i in kept], finite[kept].tolist()


def downsample_indices(values: Sequence[Any], buckets: int) -> tuple[list[int], Any]:
    """The indices of the points `downsample` keeps of `values` (a numpy array, in order), and the
    values as floats (a numpy array, NaN where a value is not a finite number)."""
    import numpy as np  # lazy: every mlproj command imports this module, few draw curves

    n = len(values)
    try:
        v = np.array(values, dtype=float)  # numbers, NaN and inf: C speed (a copy: NaN is written into it)
    except (TypeError, ValueError):  # text or None among them
        v = np.asarray([x if _is_finite(x) else np.nan for x in values], dtype=float)
    v[~np.isfinite(v)] = np.nan
    if n <= 2 * buckets:
        return np.flatnonzero(~np.isnan(v)), v
    size = -(-n // buckets)  # points per bucket, rounded up; the last bucket may be short
    grid = np.full(size * buckets, np.nan)
    grid[:n] = v
    grid = grid.reshape(buckets, size)
    finite = ~np.isnan(grid)
    low = np.where(finite, grid, np.inf).argmin(axis=1)
    high = np.where(finite, grid, -np.inf).argmax(axis=1)
    rows = np.flatnonzero(finite.any(axis=1))  # a bucket of only NaNs keeps nothing
    kept = np.union1d(rows * size + low[rows], rows * size + high[rows])
    ends = [i for i in (0, n - 1) if not np.isnan(v[i])]
    return np.union1d(kept, np.asarray(ends, dtype=kept.dtype)), v


def _is_finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
