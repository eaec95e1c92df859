"""Learning-rate schedules from config: `scheduler`, `warmup_steps`, `step_size`, `gamma`, `plateau_patience`.

Every schedule but `plateau` is one `LambdaLR` stepped after each optimizer step, its factor a
function of the optimizer steps taken (`lr_factor`):

- `cosine`: from `lr` to ~0 at the run's last optimizer step;
- `step`: `lr * gamma ** (epoch // step_size)`, the epoch counted as `steps_per_epoch` optimizer
  steps, so the lr changes at the first step of every `step_size`-th epoch, as an epoch-stepped
  `StepLR` would;
- `onecycle`: the shape of torch's `OneCycleLR` curve (cosine up from `lr / 25` to `lr` over `warmup_steps`, 30% of
  the run by default, then cosine down to `lr / 25e4`), without its momentum cycling;
- `plateau`: torch's `ReduceLROnPlateau` (factor `gamma`, patience `plateau_patience` evaluations),
  stepped after each epoch's evaluation with the model's benchmark metric;
- `none`: a constant `lr`.

`warmup_steps` (not for `onecycle`, whose rise it sets) raises the lr linearly from `lr / (warmup_steps + 1)`
to `lr` over the first optimizer steps, then the schedule takes over. The schedule's parameters come
from the config and the run's length, known when training starts (`set_run_length`); a checkpoint
holds the schedule's step count, so a resumed run continues the same curve exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mlproj.errors import MLProjError
from mlproj.errors import invalid_config as invalid_value

SCHEDULERS = ("none", "cosine", "step", "onecycle", "plateau")
# The config keys of a schedule and their defaults (main.py's config scope lists them too).
DEFAULTS: dict[str, Any] = {"scheduler": "none", "warmup_steps": 0, "step_size": 1, "gamma": 0.1, "plateau_patience": 10}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_schedule_config(config: dict[str, Any]) -> None:
    """`MLProjError` naming the first bad schedule key of `config` (keys it lacks are fine).

    `warmup_steps` is checked against the run's length here when `n_global_iterations` gives it;
    otherwise when training starts (`LRSchedule.set_run_length`).
    """
    if "scheduler" in config and config["scheduler"] not in SCHEDULERS:
        raise invalid_value("scheduler", config["scheduler"], "one of " + ", ".join(SCHEDULERS))
    for key, low in (("warmup_steps", 0), ("step_size", 1), ("plateau_patience", 0)):
        value = config.get(key, DEFAULTS[key])
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise invalid_value(key, value, f"an integer >= {low}")
    gamma = config.get("gamma", DEFAULTS["gamma"])
    if not _is_number(gamma) or not gamma > 0:
        raise invalid_value("gamma", gamma, "a number > 0, e.g. gamma=0.1")
    n_steps = config.get("n_global_iterations")
    if _is_number(n_steps) and config.get("warmup_steps", 0) >= n_steps:
        raise _warmup_too_long(config["warmup_steps"], n_steps)


def _warmup_too_long(warmup_steps: int, total_steps: int) -> MLProjError:
    return MLProjError(
        f"config warmup_steps={warmup_steps} is invalid: the run has only {total_steps} optimizer steps. "
        f"Run with warmup_steps=<value below {total_steps}> to fix it."
    )


def _cosine(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2 * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


def lr_factor(kind: str, step: int, *, warmup_steps: int, total_steps: int, steps_per_epoch: int,
              step_size: int = 1, gamma: float = 0.1) -> float:
    """The multiple of `lr` for the optimizer step after `step` steps were taken (`step` counts from 0).

    Args:
        kind: one of SCHEDULERS (`plateau` warms up here and is reduced by `ReduceLROnPlateau`).
        total_steps: the run's optimizer steps; steps past it keep the last step's factor.
        steps_per_epoch: optimizer steps in one epoch (the `step` schedule counts epochs in them).
    """
    if kind == "onecycle":  # torch's OneCycleLR curve; its rise is the warmup
        peak = (warmup_steps or max(1, round(0.3 * total_steps))) - 1
        if step <= peak:
            return _cosine(1 / 25, 1.0, step / peak if peak else 1.0)
        return _cosine(1.0, 1 / 25e4, (step - peak) / max(total_steps - 1 - peak, 1))
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if kind == "cosine":
        return _cosine(1.0, 0.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
    if kind == "step":
        return gamma ** ((step // max(steps_per_epoch, 1)) // step_size)
    return 1.0


class LRSchedule:
    """The config's schedule of one optimizer: stepped by the model after each optimizer step
    (`after_step`) and after each epoch's evaluation (`after_evaluation`); saved with the model's
    schedulers (`state_dict`).

    Args:
        optimizer: the optimizer whose `lr` it sets; `lr` is its peak.
        scheduler: one of SCHEDULERS.
        lower_is_better: the direction of the metric `plateau` watches.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: str = "none", *, warmup_steps: int = 0,
                 step_size: int = 1, gamma: float = 0.1, plateau_patience: int = 10, lower_is_better: bool = True):
        self.kind, self.warmup_steps, self.step_size, self.gamma = scheduler, warmup_steps, step_size, gamma
        self.total_steps, self.steps_per_epoch = None, 1  # the run's length: set when training starts
        # A closure, not a bound method: LambdaLR then saves no copy of the parameters, which come
        # from the config (a resumed run that trains longer stretches its curve).
        def factor(step: int) -> float:
            # Before the run's length is known only step 0's factor is asked for, which needs none.
            return lr_factor(self.kind, step, warmup_steps=self.warmup_steps, total_steps=self.total_steps or 10**9,
                             steps_per_epoch=self.steps_per_epoch, step_size=self.step_size, gamma=self.gamma)

        self.per_step = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        self.plateau = None
        if scheduler == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min" if lower_is_better else "max", factor=gamma, patience=plateau_patience)

    @classmethod
    def from_config(cls, optimizer: torch.optim.Optimizer, config: dict[str, Any],
                    lower_is_better: bool = True) -> LRSchedule | None:
        """The schedule config keys describe (see the module docstring), or None for a constant lr.

        Raises:
            MLProjError: on a bad schedule value.
        """
        check_schedule_config(config)
        keys = {key: config.get(key, default) for key, default in DEFAULTS.items()}
        if keys["scheduler"] == "none" and keys["warmup_steps"] == 0:
            return None
        return cls(optimizer, keys.pop("scheduler"), lower_is_better=lower_is_better, **keys)

    def set_run_length(self, total_steps: int, steps_per_epoch: int) -> None:
        """Tell the schedule the run's length in optimizer steps, before its first step.

        Raises:
            MLProjError: when `warmup_steps` does not fit in the run.
        """
        if total_steps > 0 and self.warmup_steps >= total_steps:
            raise _warmup_too_long(self.warmup_steps, total_steps)
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch

    def after_step(self) -> None:
        """Advance one optimizer step (plateau: only while warming up, so its reductions stay)."""
        if self.total_steps is None:
            raise MLProjError("LRSchedule.set_run_length(total_steps, steps_per_epoch) must come before the first "
                              "step (MLProject.train calls it): the schedule needs the run's length.")
        if self.plateau is None or self.per_step.last_epoch < self.warmup_steps:
            self.per_step.step()

    def after_evaluation(self, value: float | None) -> None:
        """Feed `plateau` the benchmark metric of an evaluation (other schedules ignore it)."""
        if self.plateau is not None and value is not None:
            self.plateau.step(value)

    def state_dict(self) -> dict[str, Any]:
        return {"per_step": self.per_step.state_dict(),
                "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.per_step.load_state_dict(state["per_step"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])


def start_run(schedulers: list[Any], total_steps: int, steps_per_epoch: int) -> None:
    """Before training: tell each `LRSchedule` among `schedulers` the run's length in optimizer steps
    (cosine ends at the last step)."""
    for scheduler in schedulers:
        if isinstance(scheduler, LRSchedule):
            scheduler.set_run_length(total_steps, steps_per_epoch)


def step_after_optimizer_step(schedulers: list[Any]) -> None:
    """The loop's per-step scheduler step, after each optimizer step: every `LRSchedule` advances."""
    for scheduler in schedulers:
        if isinstance(scheduler, LRSchedule):
            scheduler.after_step()


def epoch_counts(schedulers: list[Any]) -> list[Any]:
    """Each scheduler's step count (torch's `last_epoch`; None for one without it), taken before
    the model's `on_epoch_end` hook so `step_at_epoch_end` sees which ones the hook stepped."""
    return [getattr(scheduler, "last_epoch", None) for scheduler in schedulers]


def step_at_epoch_end(schedulers: list[Any], counts_before: list[Any], benchmark_value: float | None) -> None:
    """The loop's once-per-epoch scheduler step, after the model's `on_epoch_end` hook: an
    `LRSchedule` takes the benchmark value; a torch scheduler steps (`ReduceLROnPlateau` with the
    benchmark value) unless the hook stepped it already. So a hook overridden without `super()`
    cannot freeze the learning rate, and one that steps its own scheduler steps it once."""
    for scheduler, before in zip(schedulers, counts_before, strict=True):
        if isinstance(scheduler, LRSchedule):
            scheduler.after_evaluation(benchmark_value)
        elif before is not None and getattr(scheduler, "last_epoch", None) != before:
            continue  # the model's hook stepped it
        elif isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if benchmark_value is not None:
                scheduler.step(benchmark_value)
        else:
            scheduler.step()
