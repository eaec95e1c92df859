"""Where metrics go: the Sacred run (`metrics.json`, MongoDB) and TensorBoard.

Names use dots for Sacred (`train.loss`, `validation.accuracy`, `lr`) and slashes for TensorBoard
(`train/loss`), so TensorBoard groups them by split.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from mlproj.train.context import RunSink
from mlproj.util.goals import benchmark, goal, is_better
from mlproj.util.values import flatten_config

if TYPE_CHECKING:  # torch is imported by whoever hands us tensors; `mlproj runs` needs none of it
    import torch

class Tracker:
    """Sends scalars, images and histograms to a run's record and/or a TensorBoard directory.

    Args:
        sink: where the run's record goes (`RunContext.sink`), or None (no record).
        tensorboard_dir: this run's own TensorBoard directory, or None (no TensorBoard).
        prefix: prepended to every metric name.
        config_updates: the config keys the run was given (its hyperparameters in TensorBoard).
    """

    def __init__(self, sink: RunSink | None = None, tensorboard_dir: str | None = None, prefix: str = "",
                 config_updates: dict[str, Any] | None = None):
        self.sink = sink
        self.config_updates = config_updates or {}
        self.best: dict[str, float] = {}  # best value of each ranked scalar logged so far (HParams)
        self.benchmark: dict[str, Any] | None = None  # the model's benchmark (note_benchmark): it says which way is better
        self.prefix = prefix or ""
        self.tensorboard_dir = tensorboard_dir
        self.writer = None  # opened by the first write after building or `close`: building opens no file

    def _tensorboard(self) -> Any:
        """The TensorBoard writer, opened on first use; None without a TensorBoard folder."""
        if self.writer is None and self.tensorboard_dir is not None:
            # lazy: torch.utils.tensorboard loads TensorBoard and protobuf, which only a run that writes
            # TensorBoard files needs
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(self.tensorboard_dir)
        return self.writer

    def log_scalars(self, split: str | None, metrics: dict[str, float], step: int) -> None:
        """Log `{split}.{name}` for each metric (just `{name}` when split is None)."""
        for name, value in metrics.items():
            full = self.prefix + (f"{split}.{name}" if split else name)
            if self.sink is not None:
                self.sink.log_scalar(full, value, step)
            if self._tensorboard() is not None:
                self.writer.add_scalar(full.replace(".", "/"), value, step)
            self._keep_best(full, value)

    def _keep_best(self, name: str, value: float) -> None:
        if math.isfinite(value) and is_better(value, self.best.get(name), goal(name, self.benchmark)):
            self.best[name] = float(value)

    def note_benchmark(self, metric: str, lower_is_better: bool) -> None:
        """Record in the run's info (`benchmark`) which metric judges the run, and which way is better;
        the best values this tracker keeps (TensorBoard's HParams) follow it too."""
        self.benchmark = benchmark(self.prefix + metric, lower_is_better)
        if self.sink is not None:
            self.sink.set_info("benchmark", self.benchmark)

    def log_hparams(self, config: dict[str, Any], step: int) -> None:
        """Write TensorBoard's HParams summary: the hyperparameters this run was given and the best
        value of each metric.

        The hyperparameters are the config keys set on the command line (Sacred's config updates,
        which a sweep's trials set too): the ones that differ from run to run; every config key when
        none was set. Booleans stay booleans. The best values are written as scalars
        `hparams/best/<metric>` at `step` (the HPARAMS tab reads them as the session's metrics),
        a section of their own beside the training curves.
        """
        if not self.best or self._tensorboard() is None:
            return
        from torch.utils.tensorboard.summary import hparams  # lazy: as the writer (_tensorboard)

        values = {key: _hparam_value(value) for key, value in sorted(self._varied(config).items())}
        metrics = {HPARAMS_PREFIX + "best/" + name.replace(".", "/"): value for name, value in sorted(self.best.items())}
        for summary in hparams(values, metrics):
            self.writer.file_writer.add_summary(_keep_booleans(summary, values))
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def _varied(self, config: dict[str, Any]) -> dict[str, Any]:
        """The config keys the run's command line set (dotted for nested ones), else the whole config."""
        flat = flatten_config(config)
        keys = [k for k in flatten_config(self.config_updates) if k in flat and k not in NOT_HPARAMS]
        return {k: flat[k] for k in keys} if keys else {k: v for k, v in flat.items() if k not in NOT_HPARAMS}

    def log_histograms(self, module: torch.nn.Module, step: int, bins: int = 30) -> None:
        """A histogram of each parameter of `module`: binned on its device, all of them brought to
        the host in one transfer (one sync, not one per parameter)."""
        if self._tensorboard() is None:
            return
        import torch  # lazy: see TYPE_CHECKING above

        named = [(name, param.detach().float().flatten()) for name, param in module.named_parameters() if param.numel()]
        if not named:
            return
        with torch.no_grad():
            rows = []
            for _, values in named:
                low, high = values.min(), values.max()
                width = (high - low).clamp_min(1e-12) / bins
                index = ((values - low) / width).long().clamp_(0, bins - 1)
                counts = torch.zeros(bins, device=values.device).scatter_add_(0, index, torch.ones_like(values))
                rows.append(torch.cat([torch.stack([low, high, values.sum(), values.square().sum()]), counts]))
            table = torch.stack([row.to(rows[0].device) for row in rows]).double().cpu().tolist()  # the one transfer
        for (name, values), (low, high, total, squares, *counts) in zip(named, table, strict=True):
            limits = [low + (high - low) * (k + 1) / bins for k in range(bins)]
            self.writer.add_histogram_raw(f"{self.prefix}weights/{name}", low, high, values.numel(), total, squares,
                                          limits, counts, step)

    def log_images(self, name: str, images: torch.Tensor, step: int, max_images: int = 16) -> None:
        """The first `max_images` images, scaled to [0, 1] on their device, then brought over at once."""
        if images.dim() != 4 or images.shape[1] not in (1, 3) or self._tensorboard() is None:
            return
        shown = images[:max_images].detach().float()
        low, high = shown.amin(), shown.amax()
        self.writer.add_images(self.prefix + name, ((shown - low) / (high - low + 1e-8)).cpu(), step)

    def add_artifact(self, path: str, name: str | None = None) -> None:
        """Record a file with the run (copied into the run folder, or into GridFS for MongoDB)."""
        if self.sink is not None:
            self.sink.add_artifact(path, name or os.path.basename(path))

    def close(self) -> None:
        """Write out and close the event file (and its writer thread); a later write opens a new
        one in the same folder, which TensorBoard reads as the same run."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# The best values go under this tag prefix, a TensorBoard section apart from train/ and validation/.
HPARAMS_PREFIX = "hparams/"
# Config keys that say where or how a run ran, not what it learned: never a hyperparameter column.
NOT_HPARAMS = frozenset({"git_pin", "device", "tensorboard_dir", "data_dir", "model_dir", "download"})


def _hparam_value(value: Any) -> bool | int | float | str:
    """HParams take booleans, numbers and strings; anything else is shown as its text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return "None" if value is None else str(value)



def _keep_booleans(summary: Any, values: dict[str, Any]) -> Any:
    """torch's HParams `summary` with its boolean hyperparameters as booleans: torch writes them as
    numbers (it tests for int before bool), which the HPARAMS tab filters as 0 and 1."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2  # lazy: as the writer (Tracker._tensorboard)

    booleans = {key for key, value in values.items() if isinstance(value, bool)}
    for item in summary.value if booleans else []:
        data = plugin_data_pb2.HParamsPluginData.FromString(item.metadata.plugin_data.content)
        for info in data.experiment.hparam_infos:
            if info.name in booleans:
                info.type = api_pb2.DATA_TYPE_BOOL
        for key in booleans & set(data.session_start_info.hparams):
            data.session_start_info.hparams[key].bool_value = values[key]
        item.metadata.plugin_data.content = data.SerializeToString()
    return summary
