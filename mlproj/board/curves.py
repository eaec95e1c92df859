"""Metric curves as the browser draws them: few points, shaped for uPlot, sent as JSON.

A browser that is sent 200,000 points per metric freezes; one that is sent a few thousand draws at
once. Each series is cut down on the server (`mlproj.util.series.downsample`: the smallest and
largest value of each bucket, so spikes stay), to about `2 * BUCKETS` points. uPlot draws series
that share one x array, so the runs overlaid in one chart are put on the union of their steps,
with null where a run has no point (drawn as a line across the gap).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from typing import Any

from mlproj.runs.arrays import read_metric_arrays
from mlproj.runs.plot import downsampled_metrics
from mlproj.runs.query import group_runs
from mlproj.runs.reader import metrics_key
from mlproj.runs.record import Run
from mlproj.util.series import downsample_indices
from mlproj.util.table import cell

BUCKETS = 1000  # about 2,000 points per curve: more than a chart's width in pixels
RUNS_KEPT = 32  # runs whose downsampled curves are kept (a few KB each)


# A metrics.json this large is read by worker processes and the server's thread together, each
# parsing a share of its metrics: parsing numbers is CPU-bound, and one process alone would take
# seconds on 10 metrics x 200,000 steps.
PARALLEL_BYTES = 16 * 1024 * 1024
MAX_WORKERS = 4


class CurveCache:
    """Downsampled curves of recently shown runs, keyed by the size and mtime of their
    metrics.json: a run still writing gets read again, a finished one once (thread-safe).

    After `start_workers`, a large metrics.json is read by worker processes along with the
    requesting thread (see PARALLEL_BYTES); `close` stops them.
    """

    def __init__(self, kept: int = RUNS_KEPT):
        self._kept = kept
        self._lock = threading.Lock()
        self._curves: OrderedDict[tuple[str, Any], dict[str, dict[str, Any]]] = OrderedDict()
        self._pool: Any = None
        self._workers = 0

    def start_workers(self, workers: int) -> None:
        """Start `workers` processes (spawned: the server runs threads) and wait until they are ready."""
        if workers < 1:
            return
        import multiprocessing  # lazy: only a served board starts workers
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_exit_with_parent, initargs=(os.getpid(),))
        self._workers = workers
        list(self._pool.map(downsampled_metrics, [None] * workers, [[]] * workers, [BUCKETS] * workers))  # each imports now

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def run_curves(self, run: Run) -> dict[str, dict[str, Any]]:
        """{metric: {steps, values, count}} of every metric `run` logged, downsampled."""
        if run.path is None:
            return {}
        stamp = metrics_key(run.path)
        key = (run.path, None if stamp is None else tuple(stamp.values()))
        with self._lock:
            if key in self._curves:
                self._curves.move_to_end(key)
                return self._curves[key]
        names = run.metric_names
        if self._pool is not None and stamp is not None and stamp["size"] >= PARALLEL_BYTES and len(names) > 1:
            n = min(self._workers + 1, len(names))
            shares = [self._pool.submit(downsampled_metrics, run.path, names[i::n], BUCKETS) for i in range(1, n)]
            curves = downsampled_metrics(run.path, names[0::n], BUCKETS)  # this thread's share, meanwhile
            for share in shares:
                curves.update(share.result())
        else:
            curves = downsampled_metrics(run.path, None, BUCKETS)
        curves = dict(sorted(curves.items()))
        with self._lock:
            self._curves[key] = curves
            while len(self._curves) > self._kept:
                self._curves.popitem(last=False)
        return curves


def _exit_with_parent(parent: int) -> None:
    """In a worker: end when the server is gone (killed before it could stop its workers)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def overlay(curves: list[tuple[str, dict[str, list[Any]]]]) -> dict[str, Any]:
    """Curves (label, {steps, values}) as one uPlot data set: {x, series: [{label, values}]},
    each series' values on the union of the steps (None where it has no point)."""
    x = sorted({step for _, curve in curves for step in curve["steps"]})
    position = {step: i for i, step in enumerate(x)}
    series = []
    for label, curve in curves:
        values: list[float | None] = [None] * len(x)
        for step, value in zip(curve["steps"], curve["values"], strict=False):
            values[position[step]] = value
        series.append({"label": label, "values": values})
    return {"x": x, "series": series}


def compare_curves(runs: list[Run], metric: str, cache: CurveCache, labels: dict[Any, str]) -> dict[str, Any]:
    """`metric` of each run that logged it, overlaid (see `overlay`); `labels` names each run by id."""
    found = [(labels[run.id], cache.run_curves(run).get(metric)) for run in runs]
    return {"metric": metric, **overlay([(label, curve) for label, curve in found if curve is not None])}


def group_curves(runs: list[Run], metric: str, key: str) -> dict[str, Any]:
    """`metric` as one mean curve per group of runs that differ only in config `key` (e.g. seed),
    with its ±std band: the mean over the group's runs at each step that all of them logged, like
    `mlproj compare --plot --group-by`. Downsampled on the mean curve, the band kept at its points.

    Returns:
        {metric, x, series: [{label, values, low, high, n}]} (low/high: mean -/+ std; None for a group of one).

    Raises:
        MLProjError: when no run has config key `key`.
    """
    import numpy as np  # lazy: only grouped curves need it

    groups = []
    for group in group_runs(runs, key):
        arrays = read_group(group.runs, metric)
        if not arrays:
            continue
        common = arrays[0][0]
        for steps, _ in arrays[1:]:
            common = np.intersect1d(common, steps)
        if not len(common):
            continue
        stacked = np.stack([values[np.searchsorted(steps, common)] for steps, values in arrays])
        mean = stacked.mean(axis=0)
        std = stacked.std(axis=0, ddof=1) if len(arrays) > 1 else None
        kept, _ = downsample_indices(mean, BUCKETS)
        label = ", ".join(f"{k}={cell(v)}" for k, v in group.values.items()) or "all runs"
        groups.append({
            "label": f"{label} (n={len(arrays)})", "n": len(arrays), "steps": common[kept].tolist(),
            "values": mean[kept].tolist(),
            "low": None if std is None else (mean - std)[kept].tolist(),
            "high": None if std is None else (mean + std)[kept].tolist(),
        })
    x = sorted({step for g in groups for step in g["steps"]})
    position = {step: i for i, step in enumerate(x)}
    series = []
    for g in groups:
        spread = {}
        for name in ("values", "low", "high"):
            if g[name] is None:
                spread[name] = None
                continue
            column: list[float | None] = [None] * len(x)
            for step, value in zip(g["steps"], g[name], strict=True):
                column[position[step]] = _finite(value)
            spread[name] = column
        series.append({"label": g["label"], "n": g["n"], **spread})
    return {"metric": metric, "group_by": key, "x": x, "series": series}


def read_group(runs: list[Run], metric: str) -> list[tuple[Any, Any]]:
    """(steps, values) arrays of `metric` for each of `runs` that logged it, sorted by step."""
    import numpy as np  # lazy: as in group_curves

    arrays = []
    for run in runs:
        found = read_metric_arrays(run.path, [metric]).get(metric) if run.path else None
        if not found:
            continue
        steps = np.asarray(found[0][: len(found[1])])
        _, values = downsample_indices(found[1][: len(steps)], len(steps))  # all kept: only the floats, NaN for non-numbers
        order = np.argsort(steps, kind="stable")
        arrays.append((steps[order], values[order]))
    return arrays


def _finite(value: float) -> float | None:
    """JSON has no NaN: a step where a run logged no number is a gap."""
    return None if value != value or value in (float("inf"), float("-inf")) else value


def run_labels(runs: list[Run], keys: list[str]) -> dict[Any, str]:
    """Each run's label in a chart: `run 3` and up to three of the config keys that differ."""
    labels = {}
    for run in runs:
        flat = run.flat_config()
        labels[run.id] = f"run {run.id}" + "".join(f", {k}={cell(flat.get(k))}" for k in keys[:3])
    return labels

