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
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from mlproj.runs.arrays import read_metric_arrays
from mlproj.runs.plot import by_step, downsampled_metrics, group_label, run_label
from mlproj.runs.query import group_runs
from mlproj.runs.reader import metrics_key
from mlproj.runs.record import Run
from mlproj.util.series import downsample_indices

BUCKETS = 1000  # about 2,000 points per curve: more than a chart's width in pixels
# Points (a step and a value) of downsampled curves kept, over all runs and groups. In Python lists a
# point takes about 130 bytes, so at most about 65 MB: the curves of 25 runs of 10 long metrics.
POINTS_KEPT = 500_000


# A metrics.json this large is read by worker processes and the server's thread together, each
# parsing a share of its metrics: parsing numbers is CPU-bound, and one process alone would take
# seconds on 10 metrics x 200,000 steps.
PARALLEL_BYTES = 16 * 1024 * 1024
MAX_WORKERS = 4


class CurveCache:
    """Downsampled curves of recently shown runs and groups of runs, keyed by the size and mtime
    of their metrics.json: a run still writing gets read again, a finished one once (thread-safe).
    Requests that ask for the same curves at once share one read; the least recently shown are
    dropped past `points` points kept.

    After `start_workers`, a large metrics.json is read by worker processes along with the
    requesting thread (see PARALLEL_BYTES); `close` stops them.
    """

    def __init__(self, points: int = POINTS_KEPT):
        self._limit = points
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple[Any, ...], tuple[int, Any]] = OrderedDict()  # key: (points, curves)
        self._points = 0
        self._reading: dict[tuple[Any, ...], Future] = {}
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
        return self._get(("run", _stamped(run)), lambda: self._read(run),
                         lambda curves: sum(len(c["steps"]) for c in curves.values()))

    def group_curves(self, runs: list[Run], metric: str, key: str) -> dict[str, Any]:
        """`group_curves(runs, metric, key)`, read again only when one of the runs' metrics.json changed."""
        return self._get(("group", metric, key, tuple(_stamped(run) for run in runs)), lambda: group_curves(runs, metric, key),
                         lambda curves: len(curves["x"]) * sum(3 if s["low"] else 1 for s in curves["series"]))

    def _get(self, key: tuple[Any, ...], read: Callable[[], Any], points: Callable[[Any], int]) -> Any:
        """What `read` returns, kept under `key`; one thread reads, others asking meanwhile wait for it."""
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key][1]
            reading = self._reading.get(key)
            if reading is None:
                self._reading[key] = future = Future()
        if reading is not None:
            return reading.result()
        try:
            value = read()
        except BaseException as err:  # the waiting requests get the same error
            with self._lock:
                del self._reading[key]
            future.set_exception(err)
            raise
        with self._lock:
            del self._reading[key]
            size = points(value)
            self._kept[key] = (size, value)
            self._points += size
            while self._points > self._limit and len(self._kept) > 1:  # the newest stays, however large
                self._points -= self._kept.popitem(last=False)[1][0]
        future.set_result(value)
        return value

    def _read(self, run: Run) -> dict[str, dict[str, Any]]:
        stamp = metrics_key(run.path)
        names = run.metric_names
        if self._pool is not None and stamp is not None and stamp["size"] >= PARALLEL_BYTES and len(names) > 1:
            n = min(self._workers + 1, len(names))
            shares = [self._pool.submit(downsampled_metrics, run.path, names[i::n], BUCKETS) for i in range(1, n)]
            curves = downsampled_metrics(run.path, names[0::n], BUCKETS)  # this thread's share, meanwhile
            for share in shares:
                curves.update(share.result())
        else:
            curves = downsampled_metrics(run.path, None, BUCKETS)
        return dict(sorted(curves.items()))


def _stamped(run: Run) -> tuple[Any, ...]:
    """A run's folder and the size and mtime of its metrics.json: what its curves are kept under."""
    stamp = metrics_key(run.path) if run.path else None
    return run.path, None if stamp is None else tuple(stamp.values())


def _exit_with_parent(parent: int) -> None:
    """In a worker: end when the server is gone (killed before it could stop its workers)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def on_common_steps(series: list[dict[str, Any]], columns: tuple[str, ...] = ("values",)) -> dict[str, Any]:
    """`series` (each a dict with `steps` and, for each name in `columns`, values at those steps or
    None) put on one x for uPlot: {x, series}, x the union of their steps, each series' columns on x
    (None where it has no point, or no finite number: JSON has no NaN), its other keys kept."""
    x = sorted({step for s in series for step in s["steps"]})
    position = {step: i for i, step in enumerate(x)}
    placed = []
    for s in series:
        out = {k: v for k, v in s.items() if k != "steps" and k not in columns}
        for name in columns:
            if s[name] is None:
                out[name] = None
                continue
            column: list[float | None] = [None] * len(x)
            for step, value in zip(s["steps"], s[name], strict=False):
                column[position[step]] = _finite(value)
            out[name] = column
        placed.append(out)
    return {"x": x, "series": placed}


def compare_curves(runs: list[Run], metric: str, cache: CurveCache, labels: dict[Any, str]) -> dict[str, Any]:
    """`metric` of each run that logged it, as one uPlot data set (`on_common_steps`): {metric, x,
    series: [{label, values}]}; `labels` names each run by id."""
    found = [(labels[run.id], cache.run_curves(run).get(metric)) for run in runs]
    series = [{"label": label, "steps": curve["steps"], "values": curve["values"]} for label, curve in found if curve is not None]
    return {"metric": metric, **on_common_steps(series)}


def group_curves(runs: list[Run], metric: str, key: str) -> dict[str, Any]:
    """`metric` as one mean curve per group of runs that differ only in config `key` (e.g. seed),
    with its ±std band: the mean over the group's runs at each step that all of them logged, like
    `mlproj compare --plot --group-by` (labelled as it labels them). Downsampled on the mean curve,
    the band kept at its points. `CurveCache.group_curves` keeps what this returns.

    Returns:
        {metric, group_by, x, series: [{label, n, values, low, high}]} (low/high: mean -/+ std; None for a group of one).

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
        groups.append({
            "label": group_label(group.values, len(arrays)), "n": len(arrays), "steps": common[kept].tolist(),
            "values": mean[kept].tolist(),
            "low": None if std is None else (mean - std)[kept].tolist(),
            "high": None if std is None else (mean + std)[kept].tolist(),
        })
    return {"metric": metric, "group_by": key, **on_common_steps(groups, ("values", "low", "high"))}


def read_group(runs: list[Run], metric: str) -> list[tuple[Any, Any]]:
    """(steps, values) arrays of `metric` for each of `runs` that logged it, in step order."""
    import numpy as np  # lazy: as in group_curves

    arrays = []
    for run in runs:
        found = read_metric_arrays(run.path, [metric]).get(metric) if run.path else None
        if not found:
            continue
        steps = np.asarray(found[0][: len(found[1])])
        _, values = downsample_indices(found[1][: len(steps)], len(steps))  # all kept: only the floats, NaN for non-numbers
        arrays.append(by_step(steps, values))
    return arrays


def _finite(value: float) -> float | None:
    """JSON has no NaN: a step where a run logged no number is a gap."""
    return None if value != value or value in (float("inf"), float("-inf")) else value


def run_labels(runs: list[Run], keys: list[str]) -> dict[Any, str]:
    """Each run's label in a chart, by id (`mlproj.runs.plot.run_label`)."""
    return {run.id: run_label(run, keys) for run in runs}
