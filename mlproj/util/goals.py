"""Which way is better for a metric: the one rule every command follows.

A run recorded by mlproj names its benchmark in `info.benchmark` (`{"metric": "validation.accuracy",
"lower_is_better": False}`, the model's `benchmark_metric` and `benchmark_lower_is_better`). That
record decides: best.pt, the best column and the order of `mlproj runs`, TensorBoard's best values,
the sweep's best and tune's direction all ask `goal` with it. A metric the benchmark does not name,
and every metric of a plain-Sacred run that recorded none, is judged by its name (`metric_goal`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# The last word of a metric name decides which way is better: these are lower-is-better, the
# rate-like ones below are not ranked at all, and everything else (accuracy, f1, ...) is higher-is-better.
LOWER_IS_BETTER_WORDS = ("loss", "error", "err", "mse", "mae", "rmse", "nll", "perplexity", "ppl")
UNRANKED_WORDS = ("lr", "learning_rate", "epoch", "step", "time")


def benchmark(metric: str, lower_is_better: bool) -> dict[str, Any]:
    """The benchmark record a run keeps in `info.benchmark`: which metric judges it, which way is better."""
    return {"metric": metric, "lower_is_better": bool(lower_is_better)}


def recorded_benchmark(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """The benchmark a run's `info` records (see `benchmark`); None when it records none."""
    found = (info or {}).get("benchmark")
    if isinstance(found, dict) and found.get("metric") and isinstance(found.get("lower_is_better"), bool):
        return found
    return None


def goal(metric: str, recorded: dict[str, Any] | None = None) -> str | None:
    """`min` or `max`, which way is better for `metric`; None for an unranked one (lr, epoch, ...).

    Args:
        metric: a logged metric name (`validation.loss`, `train/val_loss`).
        recorded: the run's benchmark (`recorded_benchmark`). When its metric and `metric` end in the
            same word (`validation.accuracy` and `test.accuracy`), its `lower_is_better` decides;
            otherwise, and without one, the name does (`metric_goal`).
    """
    if recorded is not None and _last_word(str(recorded.get("metric", ""))) == _last_word(metric):
        return "min" if recorded["lower_is_better"] else "max"
    return metric_goal(metric)


def runs_goal(metric: str, infos: Iterable[dict[str, Any] | None]) -> str | None:
    """`goal` of `metric` for runs judged together (a table, a sweep): the benchmark most of the runs'
    `infos` record for it decides, else the name."""
    recorded = [b for info in infos if (b := recorded_benchmark(info)) is not None and _last_word(b["metric"]) == _last_word(metric)]
    return _majority(recorded) if recorded else metric_goal(metric)


def benchmark_goal(infos: Iterable[dict[str, Any] | None]) -> str | None:
    """`min` or `max` for the runs' benchmark values themselves (what `train` returns as the result):
    the direction most of the runs' `infos` record; None when none recorded a benchmark."""
    recorded = [b for info in infos if (b := recorded_benchmark(info)) is not None]
    return _majority(recorded) if recorded else None


def _majority(recorded: list[dict[str, Any]]) -> str:
    lower = sum(b["lower_is_better"] for b in recorded)
    return "min" if lower * 2 > len(recorded) else "max"


def is_better(value: float, best: float | None, goal_: str | None) -> bool:
    """Whether `value` beats `best` (None: nothing yet) for a metric of goal `goal_` (`min`/`max`);
    a tie is no improvement, and an unranked metric never improves."""
    if goal_ is None:
        return False
    return best is None or (value < best if goal_ == "min" else value > best)


def best_value(values: Iterable[Any], goal_: str | None) -> float | None:
    """The best of `values` for a metric of goal `goal_` (`min`/`max`), among its numbers (not
    bools, not NaN); None when it has none, or the metric is unranked (`goal_` None)."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
    if not numbers or goal_ is None:
        return None
    return min(numbers) if goal_ == "min" else max(numbers)


def direction(goal_: str | None) -> str:
    """Optuna's word for `goal_`: `minimize` for `min`, else `maximize`."""
    return "minimize" if goal_ == "min" else "maximize"


def metric_goal(name: str) -> str | None:
    """`min` for loss-like metric names, `max` for accuracy-like ones, None for lr/epoch/step/time:
    the rule for a metric no recorded benchmark names.

    The rule reads the last part of the name (`validation.loss` -> `loss`): it is `min` when that part
    is or ends in one of LOWER_IS_BETTER_WORDS (`loss`, `val_loss`, `error`, `mse`, ...), None when it is
    one of UNRANKED_WORDS, else `max`.
    """
    word = _last_word(name)
    if word in UNRANKED_WORDS:
        return None
    if any(word == w or word.endswith("_" + w) for w in LOWER_IS_BETTER_WORDS):
        return "min"
    return "max"



def _last_word(name: str) -> str:
    return name.replace("/", ".").rsplit(".", 1)[-1].lower()
