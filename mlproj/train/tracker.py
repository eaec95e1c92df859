"""Where metrics go: the Sacred run (`metrics.json`, MongoDB) and TensorBoard.

Names use dots for Sacred (`train.loss`, `validation.accuracy`, `lr`) and slashes for TensorBoard
(`train/loss`), so TensorBoard groups them by split.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from mlproj.util.goals import metric_goal

if TYPE_CHECKING:  # torch is imported by whoever hands us tensors; `mlproj runs` needs none of it
    import torch

class Tracker:
    """Sends scalars, images and histograms to a Sacred run and/or a TensorBoard directory.

    Args:
        run: the Sacred run, or None (no Sacred record).
        tensorboard_dir: this run's own TensorBoard directory, or None (no TensorBoard).
        prefix: prepended to every metric name.
    """

    def __init__(self, run: Any = None, tensorboard_dir: str | None = None, prefix: str = ""):
        self.run = run
        self.best: dict[str, float] = {}  # best value of each ranked scalar logged so far (HParams)
        self.prefix = prefix or ""
        self.tensorboard_dir = tensorboard_dir
        self.writer = None  # opened by the first write: building a tracker opens no file
        self._closed = False

    def _tensorboard(self) -> Any:
        """The TensorBoard writer, opened on first use; None without a TensorBoard folder or once closed."""
        if self.writer is None and self.tensorboard_dir is not None and not self._closed:
            from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard is slow to import

            self.writer = SummaryWriter(self.tensorboard_dir)
        return self.writer

    def log_scalars(self, split: str | None, metrics: dict[str, float], step: int) -> None:
        """Log `{split}.{name}` for each metric (just `{name}` when split is None)."""
        for name, value in metrics.items():
            full = self.prefix + (f"{split}.{name}" if split else name)
            if self.run is not None:
                self.run.log_scalar(full, value, step)
            if self._tensorboard() is not None:
                self.writer.add_scalar(full.replace(".", "/"), value, step)
            self._keep_best(full, value)

    def _keep_best(self, name: str, value: float) -> None:
        goal = metric_goal(name)
        if goal is None or not math.isfinite(value):
            return
        best = self.best.get(name)
        if best is None or (value < best if goal == "min" else value > best):
            self.best[name] = float(value)

    def note_benchmark(self, metric: str, lower_is_better: bool) -> None:
        """Record in the run's info (`benchmark`) which metric judges the run, and which way is better."""
        if self.run is not None and isinstance(getattr(self.run, "info", None), dict):
            self.run.info["benchmark"] = {"metric": self.prefix + metric, "lower_is_better": lower_is_better}

    def log_hparams(self, config: dict[str, Any], step: int) -> None:
        """Write TensorBoard's HParams summary: the config values and the best value of each metric.

        The best values are also written as scalars `best/<metric>` at `step`, which the HPARAMS tab
        reads as the session's metrics.
        """
        if not self.best or self._tensorboard() is None:
            return
        from torch.utils.tensorboard.summary import hparams

        values = {key: _hparam_value(value) for key, value in sorted(config.items())}
        metrics = {"best/" + name.replace(".", "/"): value for name, value in sorted(self.best.items())}
        for summary in hparams(values, metrics):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def log_histograms(self, module: torch.nn.Module, step: int) -> None:
        if self._tensorboard() is None:
            return
        for name, param in module.named_parameters():
            self.writer.add_histogram(f"{self.prefix}weights/{name}", param.detach().float().cpu(), step)

    def log_images(self, name: str, images: torch.Tensor, step: int, max_images: int = 16) -> None:
        if images.dim() != 4 or images.shape[1] not in (1, 3) or self._tensorboard() is None:
            return
        shown = images[:max_images].detach().float().cpu()
        low, high = shown.amin(), shown.amax()
        self.writer.add_images(self.prefix + name, (shown - low) / (high - low + 1e-8), step)

    def add_artifact(self, path: str, name: str | None = None) -> None:
        """Record a file with the run (copied into the run folder, or into GridFS for MongoDB)."""
        if self.run is not None:
            self.run.add_artifact(path, name=name or os.path.basename(path))

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        self._closed = True
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _hparam_value(value: Any) -> bool | int | float | str:
    """HParams take booleans, numbers and strings; anything else is shown as its text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return "None" if value is None else str(value)
