"""What the training loop prints: its header, one line per evaluation, the epoch's progress bar."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm


def progress_bar(total: int, initial: int, desc: str, terminal: bool | None, enabled: bool) -> Any:
    """The epoch's progress bar, drawn only when stdout is a terminal: redirected output
    (`> log.txt`, a SLURM log) gets the printed lines alone, with no `\\r` redraws.

    It goes to stdout, not stderr: Sacred's capture tees the two through separate processes,
    and a redraw sent through stderr could land in the middle of the line printed before it.

    Args:
        terminal: whether stdout is a terminal, when known before Sacred's capture began (else None).
        enabled: False on the ranks that do not record.
    """
    # tqdm's monitor thread can redraw a bar just after it closed, over the line printed next.
    tqdm.monitor_interval = 0
    if terminal is None:
        terminal = _isatty(sys.stdout)
    return tqdm(total=total, initial=initial, desc=desc, file=sys.stdout, mininterval=1.0, dynamic_ncols=True,
                leave=False, disable=not (terminal and enabled))


def header(model: Any, config: dict[str, Any], device: Any, start_step: int, checkpoint_dir: str | None) -> str:
    """`Training lenet on mnist (cpu) for 10 epochs; checkpoints in runs/3`."""
    name = model.name()
    if type(model).__name__ == name and "model" in config and "dataset" in config:
        name = f"{config['model']} on {config['dataset']}"  # the config-built classifier
    n_steps = config["n_global_iterations"]
    what = count(n_steps, "step") if n_steps else count(config["n_epochs"], "epoch")
    start = f", resuming at step {start_step}" if start_step else ""
    saving = f"checkpoints in {checkpoint_dir}" if checkpoint_dir else "no checkpoints (pass model_dir=DIR to keep them)"
    return f"Training {name} ({device}) for {what}{start}; {saving}"


def progress_line(epoch: int, step: int, metrics: dict[str, float], improved: bool) -> str:
    """`epoch 2 step 52: validation.accuracy 0.9100  validation.loss 0.3000  (best)`."""
    return f"epoch {epoch} step {step}: {format_metrics(metrics)}{'  (best)' if improved else ''}"


def stopped_line(reason: str, step: int, saved: str | None, continue_with: Callable[[], str]) -> str:
    """What a run stopped by a signal says: where the step reached was saved, how to continue
    (`continue_with()`, asked only when something was saved)."""
    if saved is None:
        return (f"\n{reason}: stopped at step {step}; no checkpoint saved (the run records nothing; "
                "pass model_dir=DIR to keep checkpoints)")
    return f"\n{reason}: saved {saved}; continue with {continue_with()}"


def format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items()))


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a stand-in without isatty, or closed
        return False
