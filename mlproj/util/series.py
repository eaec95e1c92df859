"""The small summary of a metric series that stands in for the series when runs are listed.

A summary holds, per metric, how many finite numbers were logged and the first, last, smallest
and largest of them with their steps. The observer that writes metrics.json keeps one up to date
(`SUMMARY_FILE` beside it); a reader of a run without one (recorded by plain Sacred) makes it from
metrics.json once. Both use `add_points`, so the two agree. Ties keep the earliest step, as
Python's `min`/`max` do over the series.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

# Written beside metrics.json in a run folder; neither Sacred nor Omniboard reads it.
SUMMARY_FILE = "metrics_summary.json"
SUMMARY_VERSION = 1

FIELDS = ("count", "first", "first_step", "last", "last_step", "min", "min_step", "max", "max_step")


def add_points(summary: dict[str, Any] | None, steps: Iterable[Any], values: Iterable[Any]) -> dict[str, Any] | None:
    """`summary` (a dict of FIELDS, or None for an empty series) updated with new (step, value) points.

    Values that are not finite numbers (NaN, inf, text) are left out, as `Run.summary` leaves them out.
    Returns the updated summary (the same dict when one was given), None while nothing counted.
    """
    for step, value in zip(steps, values, strict=False):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if summary is None:
            summary = {"count": 0, "first": value, "first_step": step, "min": value, "min_step": step, "max": value, "max_step": step}
        summary["count"] += 1
        summary["last"], summary["last_step"] = value, step
        if value < summary["min"]:
            summary["min"], summary["min_step"] = value, step
        if value > summary["max"]:
            summary["max"], summary["max_step"] = value, step
    return summary


def summarize_series(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The summary of every metric in a metrics.json-shaped dict ({name: {steps, values, ...}})."""
    summaries = {}
    for name, series in metrics.items():
        summary = add_points(None, series.get("steps", []), series.get("values", []))
        summaries[name] = summary if summary is not None else {"count": 0}
    return summaries
