"""Callbacks: a base class of no-op hooks, called in list order by `MLProject`'s loop, and the
early-stopping callback that config `early_stopping_patience` turns on."""

from __future__ import annotations

from typing import Any

from mlproj.errors import MLProjError

MLProject = Any  # the hooks receive the `MLProject` (mlproj.train.loop, which imports this module)


class Callback:
    """Override the hooks you need; the others do nothing. A project calls each hook of each of its
    callbacks in list order. An exception in a hook fails the run with one line naming the hook.

    Hooks receive the project, so they may read `project.global_step`, `project.epoch` (epochs
    completed) and `project.state`, and call `project.log_metrics(...)` or `project.request_stop(...)`.

    Example:
        >>> class StopAtLoss(Callback):
        ...     def on_evaluate_end(self, project, split, metrics):
        ...         if metrics[f"{split}.loss"] < 0.1:
        ...             project.request_stop("validation loss below 0.1")
    """

    def on_train_begin(self, project: MLProject) -> None:
        """Training starts (after the model's own `on_train_begin`)."""

    def on_train_batch_end(self, project: MLProject, metrics: dict[str, Any]) -> None:
        """A training step is done; `metrics` as `train_batch` returned them (tensors: reading one
        with `.item()` waits for the device, so do it only when needed)."""

    def on_evaluate_end(self, project: MLProject, split: str, metrics: dict[str, float]) -> None:
        """An evaluation of `split` is done; `metrics` are named `{split}.{name}`."""

    def on_epoch_end(self, project: MLProject, metrics: dict[str, float]) -> None:
        """An epoch ended and was evaluated (`metrics`: that evaluation); called before its checkpoint."""

    def on_checkpoint(self, project: MLProject, path: str) -> None:
        """`path` (last.pt) was written, on the process that writes checkpoints."""

    def on_train_end(self, project: MLProject) -> None:
        """Training ended normally (budget spent or a stop requested), after the last checkpoint."""


def call_hooks(callbacks: list[Callback], hook: str, project: MLProject, *args: Any) -> None:
    """Call `hook` of each callback in order; an exception becomes one `MLProjError` line naming it."""
    for callback in callbacks:
        try:
            getattr(callback, hook)(project, *args)
        except Exception as err:  # noqa: BLE001 - any failure of user code: name the callback and its hook
            detail = " ".join(str(err).split())
            raise MLProjError(
                f"callback {type(callback).__name__}.{hook} failed: {type(err).__name__}"
                f"{': ' + detail if detail else ''}"
            ) from err


def overrides(callbacks: list[Callback], hook: str) -> bool:
    """Whether a callback in `callbacks` does something at `hook` (defines it other than `Callback`)."""
    return any(getattr(type(callback), hook, None) is not getattr(Callback, hook) for callback in callbacks)


class EarlyStopping(Callback):
    """Stop after `patience` epoch-end evaluations in a row that do not strictly improve on the best
    value of the model's benchmark metric (the project's best score, so `benchmark_lower_is_better`
    holds). The reason names the metric, its best value and the step it was reached at.

    A resumed run keeps its best score; the count of evaluations without improvement starts anew.
    """

    def __init__(self, patience: int):
        self.patience = patience
        self.waited = 0  # evaluations since the last improvement

    def on_train_begin(self, project: MLProject) -> None:
        self.waited = 0

    def on_epoch_end(self, project: MLProject, metrics: dict[str, float]) -> None:
        # lazy: metrics imports torch; `from mlproj import Callback` at the top of a main file stays
        # torch-free, so its `print_config` starts fast
        from mlproj.train.metrics import benchmark_item

        item, state = benchmark_item(project.model, metrics), project.state
        if item is None or state.best_score is None:
            return  # no evaluation split, or no benchmark metric in it: nothing to compare
        self.waited = 0 if state.best_step == state.global_step else self.waited + 1
        if self.waited >= self.patience:
            project.request_stop(f"early stopping: {item[0]} did not improve on {state.best_score:.4g} "
                                 f"(step {state.best_step}) for {self.waited} evaluations")
