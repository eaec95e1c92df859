"""Which way is better for a metric, read from its name."""

from __future__ import annotations

# The last word of a metric name decides which way is better: these are lower-is-better, the
# rate-like ones below are not ranked at all, and everything else (accuracy, f1, ...) is higher-is-better.
LOWER_IS_BETTER_WORDS = ("loss", "error", "err", "mse", "mae", "rmse", "nll", "perplexity", "ppl")
UNRANKED_WORDS = ("lr", "learning_rate", "epoch", "step", "time")


def metric_goal(name: str) -> str | None:
    """`min` for loss-like metric names, `max` for accuracy-like ones, None for lr/epoch/step/time.

    The rule reads the last part of the name (`validation.loss` -> `loss`): it is `min` when that part
    is or ends in one of LOWER_IS_BETTER_WORDS (`loss`, `val_loss`, `error`, `mse`, ...), None when it is
    one of UNRANKED_WORDS, else `max`.
    """
    word = name.replace("/", ".").rsplit(".", 1)[-1].lower()
    if word in UNRANKED_WORDS:
        return None
    if any(word == w or word.endswith("_" + w) for w in LOWER_IS_BETTER_WORDS):
        return "min"
    return "max"
