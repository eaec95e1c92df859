"""Curves of a metric over runs: drawn into a PNG (`mlproj compare --plot`), or cut down to the
points a chart needs (`downsampled_metrics`, what `mlproj board` sends to the browser)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from mlproj.errors import MLProjError
from mlproj.runs.arrays import iter_metric_arrays
from mlproj.runs.query import differing_keys, group_runs, metric_names
from mlproj.runs.record import Run
from mlproj.util.series import downsample
from mlproj.util.table import cell


def downsampled_metrics(path: str | None, names: list[str] | None, buckets: int) -> dict[str, dict[str, Any]]:
    """{metric: {steps, values, count}} of the metrics `names` (None: all) of the run folder `path`,
    each cut to about `2 * buckets` points by `mlproj.util.series.downsample` (the smallest and
    largest value of each bucket), in step order (a chart's x ascends); one metric's series in memory at
    a time. {} for `path` None."""
    curves = {}
    for name, steps, values in iter_metric_arrays(path, names) if path else ():
        kept_steps, kept_values = downsample(*by_step(steps, values), buckets)
        curves[name] = {"steps": kept_steps, "values": kept_values, "count": min(len(steps), len(values))}
    return curves


def by_step(steps: Sequence[Any], values: Sequence[Any]) -> tuple[Sequence[Any], Sequence[Any]]:
    """A series' points in step order, points logged at one step in the order they were logged
    (a resumed run can log a step again). numpy arrays (as `iter_metric_arrays`
    reads them) stay arrays; lists stay lists."""
    n = min(len(steps), len(values))
    if hasattr(steps, "argsort") and hasattr(values, "argsort"):
        steps, values = steps[:n], values[:n]
        if n > 1 and (steps[1:] < steps[:-1]).any():
            order = steps.argsort(kind="stable")
            return steps[order], values[order]
        return steps, values
    order = sorted(range(n), key=lambda i: _step_order(steps[i]))  # sorted() is stable
    return [steps[i] for i in order], [values[i] for i in order]


def _step_order(step: Any) -> tuple[int, Any]:
    """A step's place: numbers by value, before anything else a damaged record holds (by its text)."""
    number = isinstance(step, (int, float)) and not isinstance(step, bool)
    return (0, step) if number else (1, str(step))


def check_metric(runs: list[Run], metric: str) -> None:
    """`MLProjError` when none of `runs` logged `metric`, naming the ones they did."""
    if not any(metric in run.summaries for run in runs):
        raise MLProjError(f"--metric {metric}: none of these runs logged it; they logged {', '.join(metric_names(runs)) or 'nothing'}.")


def plot_metric(runs: list[Run], metric: str, path: str, group_by: str | None = None) -> int:
    """Draw `metric` against step into the PNG `path`: one curve per run, or with `group_by` one mean
    curve per group with a ±std band. The curves' labels go into the PNG's Description; returns
    how many curves were drawn.

    Raises:
        MLProjError: when no run logged `metric`.
    """
    check_metric(runs, metric)
    import matplotlib  # lazy: only --plot draws; matplotlib and numpy would slow every mlproj command

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = _draw_groups(ax, runs, metric, group_by) if group_by else _draw_runs(ax, runs, metric, group_by)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}" + (f": mean ± std over {group_by}" if group_by else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)  # e.g. runs/plots/, as tune's --plot DIR
    fig.savefig(path, format="png", metadata={"Title": metric, "Description": "\n".join(labels)})
    plt.close(fig)
    return len(labels)


def _draw_runs(ax: Any, runs: list[Run], metric: str, group_by: str | None) -> list[str]:
    """One curve per run that logged `metric`, labelled with up to 3 config keys that differ and
    have a value in that run (a key the run left unset, `checkpoint=`, says nothing); the labels."""
    keys = [k for k in differing_keys(runs) if k != group_by]
    labels = []
    for run in runs:
        if metric not in run.metrics:
            continue
        s = run.metrics[metric]
        label = run_label(run, keys)
        ax.plot(s.steps, s.values, marker="o" if len(s.steps) < 20 else None, label=label)
        labels.append(label)
    return labels


def _draw_groups(ax: Any, runs: list[Run], metric: str, group_by: str) -> list[str]:
    """One mean curve with a ±std band per group over `group_by`, on the steps all its runs logged; the labels."""
    import numpy as np  # lazy: as matplotlib in plot_metric

    labels = []
    for group in group_runs(runs, group_by):
        series = [run.metrics[metric] for run in group.runs if metric in run.metrics]
        steps = sorted(set.intersection(*(set(s.steps) for s in series))) if series else []
        if not steps:
            continue
        values = np.array([[dict(zip(s.steps, s.values, strict=False))[step] for step in steps] for s in series])
        mean, std = values.mean(axis=0), values.std(axis=0, ddof=1) if len(series) > 1 else np.zeros(len(steps))
        label = group_label(group.values, len(series))
        (line,) = ax.plot(steps, mean, label=label)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=line.get_color())
        labels.append(label)
    return labels


def run_label(run: Run, keys: list[str]) -> str:
    """A run's curve label, here and on the board: `run 3` and up to 3 of the config `keys` (those
    that differ among the runs shown) that the run set, e.g. `run 3, lr=0.01`."""
    flat = run.flat_config()
    return ", ".join([f"run {run.id}", *_settings({k: flat.get(k) for k in keys})[:3]])


def group_label(values: dict[str, Any], n: int) -> str:
    """A mean ± std curve's label, here and on the board: the settings its `n` runs share, e.g.
    `lr=0.01 (n=3)`; a group set apart only by keys it leaves unset says `checkpoint unset`."""
    return ", ".join(_settings(values) or [f"{key} unset" for key in values] or ["all runs"]) + f" (n={n})"


def _settings(values: dict[str, Any]) -> list[str]:
    """`key=value` of each key with a value: an unset one (None, shown empty) is left out of a label."""
    return [f"{key}={cell(value)}" for key, value in values.items() if cell(value) != ""]
