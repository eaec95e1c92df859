"""`MLProject`: pairs a `DatasetFactory` with a `Model` and runs the training loop.

One epoch, top to bottom: point the sampler at the epoch, train on each batch, log on logging steps,
save on save steps, then evaluate, update the best score, call the epoch hook and write last.pt
(and best.pt when it improved). Whether to stop is decided in one place (`_should_stop`), which
leaves the reason in `TrainState.stop_reason`. Counters, best score and RNG state live in one
`TrainState`, saved whole in every checkpoint, so a resumed run continues exactly where the saved
one stopped.

Building a project configures it; the side effects (joining a torchrun process group, seeding the
global generators, opening the TensorBoard writer) wait until it trains or evaluates.
"""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any

import torch

from mlproj.data.factory import DatasetFactory
from mlproj.errors import MLProjError
from mlproj.train import console, distributed, places
from mlproj.train.batches import batch_size, first_tensor, to_device
from mlproj.train.checkpoint import (
    adopt_checkpoints,
    checkpoint_dict,
    load_checkpoint,
    load_into,
    resolve_checkpoint,
    write_checkpoint,
)
from mlproj.train.config import validate_config, with_defaults
from mlproj.train.metrics import MeanMetrics
from mlproj.train.model import Model
from mlproj.train.signals import is_signal_name, stop_on_signals
from mlproj.train.state import TrainState, capture_rng, restore_rng, seed_everything, seeded
from mlproj.train.tracker import Tracker
from mlproj.util.device import local_device, resolve_device
from mlproj.util.files import check_writable

__all__ = ["MLProject", "TrainState"]


class MLProject:
    """Trains `model` on the data of `dataset_factory` as `config` says.

    Subclass and override the static methods `get_dataset_factory(config)` and `get_model(config)`,
    or pass `model=` and `dataset_factory=`. The defaults build what config `dataset` and `model` name.
    Building configures; training or evaluating joins a torchrun job, seeds and opens TensorBoard.

    Args:
        config: the config dict (Sacred's `_run.config`); machinery keys missing from it get defaults.
        _run: the Sacred run that records metrics and checkpoints, or None.
        model: a ready `Model` (else `get_model(config)`).
        dataset_factory: a ready `DatasetFactory` (else `get_dataset_factory(config)`).

    Raises:
        MLProjError: on a bad config value or an unusable `resume` target.

    Example:
        >>> @ex.main
        ... def main(_run):
        ...     project = MyProject.from_run(_run)
        ...     project.train()
        ...     project.test()
    """

    def __init__(self, config: dict[str, Any], _run: Any = None, *, model: Model | None = None,
                 dataset_factory: DatasetFactory | None = None):
        self.config = with_defaults(dict(config))
        validate_config(self.config)
        self._run = _run
        self.device = local_device(resolve_device(self.config["device"]))
        self.is_global_zero = distributed.is_global_zero()
        # Built under the config's seed (the initial weights are the seed's) in a scope of its own:
        # building a project draws nothing from, and reseeds nothing of, the caller's generators.
        with seeded(self.config.get("seed") or 0):
            self.dataset_factory = dataset_factory if dataset_factory is not None else self.get_dataset_factory(self.config)
            self.model = model if model is not None else self.get_model(self.config)
        if distributed.is_distributed():
            self.dataset_factory.shard(distributed.rank(), distributed.world_size())
        cfg = self.config
        self.model.setup(self.device, amp=cfg["amp"], compile=cfg["compile"], channels_last=cfg["channels_last"])
        self.state = TrainState()
        self.run_key = places.run_info(_run, "run_key") or f"unobserved-{uuid.uuid4().hex[:8]}"
        self.checkpoint_dir = places.checkpoint_dir(_run, cfg, self.run_key)  # None: no checkpoints (-u)
        # Only rank 0 records; the other ranks' Sacred runs are unobserved (record.experiment). The
        # tracker opens its TensorBoard writer on its first write.
        tensorboard = places.tensorboard_run_dir(_run, cfg, self.run_key) if self.is_global_zero else None
        self.tracker = Tracker(_run if self.is_global_zero else None, tensorboard, prefix=cfg["prefix"])
        self._training_started = False
        if cfg["resume"] is not None:
            self.resume(cfg["resume"])

    # ------------------------------------------------------------------ building blocks
    @classmethod
    def from_run(cls, _run: Any) -> MLProject:
        """Build the project from a Sacred run: its config, and the run to record into."""
        return cls(dict(_run.config), _run=_run)

    @staticmethod
    def get_dataset_factory(config: dict[str, Any]) -> DatasetFactory:
        """The data of config `dataset` (override to bring your own)."""
        from mlproj.data import create_dataset_factory

        return create_dataset_factory(config)

    @staticmethod
    def get_model(config: dict[str, Any]) -> Model:
        """The classifier of config `model` for config `dataset` (override to bring your own)."""
        from mlproj.train.model import create_model

        return create_model(config)

    # ------------------------------------------------------------------ counters (original API)
    @property
    def global_step(self) -> int:
        return self.state.global_step

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def epoch_step(self) -> int:
        return self.state.epoch_step

    @property
    def best_score(self) -> float | None:
        return self.state.best_score

    # ------------------------------------------------------------------ the loop
    def train(self) -> float | None:
        """Train until `n_global_iterations` steps (when given) or `n_epochs` epochs are done.

        Returns:
            The best value of the model's benchmark metric on the evaluation split (None if the
            factory has neither a validation nor a test set).

        Raises:
            KeyboardInterrupt: after SIGINT or SIGTERM, once last.pt holds the step reached.
        """
        self._start_training()
        s = self.state
        s.stop_reason, s.window = None, MeanMetrics()  # the window spans epochs: metrics since the last log
        self.model.on_train_begin()
        with stop_on_signals(self._stop_requested, lambda: is_signal_name(self.state.stop_reason)):
            while not self._should_stop():
                if self._train_epoch():  # False: stopped mid-epoch
                    s.epoch, s.epoch_step = s.epoch + 1, 0
                    self._evaluate_and_save(epoch_end=True)
            if not is_signal_name(s.stop_reason) and s.last_eval_step != s.global_step:
                self._evaluate_and_save(epoch_end=False)  # a final evaluation and save mid-epoch
            if is_signal_name(s.stop_reason):
                self._interrupt()
        self.model.on_train_end()
        self.tracker.log_hparams(self.config, s.global_step)  # TensorBoard's HPARAMS tab
        self.tracker.flush()
        return s.best_score

    def _train_epoch(self) -> bool:
        """One (possibly resumed) epoch; False when training stops before its end."""
        s, cfg = self.state, self.config
        loader = self.dataset_factory.train_loader()
        # Our own loaders start mid-epoch by themselves; a loader from outside is skipped through
        # (its order is its own, so only the built-in loaders resume mid-epoch exactly).
        skip = 0 if self.dataset_factory.set_epoch(s.epoch, s.epoch_step) else s.epoch_step
        self.model.train()
        self.model.on_epoch_begin(s.epoch)
        epoch_total = s.epoch_step + len(loader) - skip
        if epoch_total == 0:
            raise MLProjError("the training set is empty: check data_dir and val_fraction (it must leave samples to train on).")
        batch = None
        with self._progress_bar(epoch_total, s.epoch_step) as bar:
            for batch in itertools.islice(loader, skip, None):
                batch = to_device(batch, self.model.device, self.model.memory_format)
                metrics = self.model.train_batch(batch)
                self.model.after_batch()
                s.global_step += 1
                s.epoch_step += 1
                s.window.add(metrics, batch_size(batch))
                bar.update()
                if s.global_step % cfg["log_iteration_scalars"] == 0:
                    # The only host sync of a training step, and only on logging steps.
                    self._log_train(_mean_over_ranks(s.window))
                    s.window = MeanMetrics()
                if _is_due(cfg["log_iteration_all"], s.global_step):
                    self._log_all(batch)
                if s.epoch_step == epoch_total:
                    break  # the epoch's end logs, evaluates and saves
                if self._should_stop():
                    return False
                if _is_due(cfg["save_iterations"], s.global_step):
                    self.save_checkpoint()
        if cfg["log_iteration_all"] == "epoch" and batch is not None:
            self._log_all(batch)
        return True

    def _should_stop(self) -> bool:
        """The one decision to stop: a signal came, or the step or epoch budget is spent. The reason
        stays in `state.stop_reason`."""
        s, n_steps = self.state, self.config["n_global_iterations"]
        if s.stop_reason is None and n_steps is not None and s.global_step >= n_steps:
            s.stop_reason = "n_global_iterations"
        elif s.stop_reason is None and n_steps is None and s.epoch >= self.config["n_epochs"]:
            s.stop_reason = "n_epochs"
        return s.stop_reason is not None

    def _stop_requested(self, reason: str) -> None:
        self.state.stop_reason = reason

    def _evaluate_and_save(self, epoch_end: bool) -> None:
        """Evaluate, keep the best, call the epoch hook, then checkpoint (in that order, so the
        checkpoint holds the scheduler already stepped for this epoch)."""
        metrics = self.evaluate()
        improved = self.state.improve(self._benchmark_value(metrics), bool(self.model.benchmark_lower_is_better))
        if self.is_global_zero:
            print(console.progress_line(self.state.epoch, self.state.global_step, metrics, improved), flush=True)
        if epoch_end:
            self.model.on_epoch_end(self.state.epoch - 1, metrics)
        self.save_checkpoint(best=improved)

    def evaluate(self, split: str | None = None) -> dict[str, float]:
        """Average `test_batch` metrics over `split` (default: validation, else test) and log them."""
        self._join_process_group()
        split = split or self._eval_split()
        self.state.last_eval_step = self.state.global_step
        if split is None:
            return {}
        loader = self.dataset_factory.validation_loader() if split == "validation" else self.dataset_factory.test_loader()
        metrics = _mean_over_ranks(_test_metrics(self.model, loader))
        self.tracker.log_scalars(split, metrics, self.state.global_step)
        return {f"{split}.{name}": value for name, value in metrics.items()}

    def test(self) -> dict[str, float]:
        """Evaluate on the test set, log `test.*`, print and return the metrics."""
        if not self.dataset_factory.has_test_set():
            raise MLProjError("this dataset has no test set: evaluate on the validation set with project.evaluate().")
        metrics = self.evaluate("test")
        if self.is_global_zero:
            print("[test] " + console.format_metrics(metrics), flush=True)
        self.tracker.flush()
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint dict: plain values and tensors under stable keys."""
        self.state.rng = capture_rng()
        run = {"id": places.run_id(self._run), "key": self.run_key, "git": places.run_info(self._run, "git")}
        return checkpoint_dict(self.model, self.state.saved(), self.config, run)

    def save_checkpoint(self, best: bool = False) -> str | None:
        """Write last.pt (and best.pt when `best`) atomically and record them with the run.

        Returns:
            The path of last.pt, or None when this run writes no checkpoints (`-u` without `model_dir`).

        Raises:
            MLProjError: when the write fails (disk full, folder gone); the previous file is kept.
        """
        if self.checkpoint_dir is None:
            return None
        if not self.is_global_zero:
            return os.path.join(self.checkpoint_dir, "last.pt")  # every rank holds the same weights; rank 0 writes them
        fix = f"Free space or pass model_dir=<another folder>, then continue with {self._continue_with()}."
        written = write_checkpoint(self.checkpoint(), self.checkpoint_dir, best, self.state.global_step, fix)
        for path in written:
            self.tracker.add_artifact(path, os.path.basename(path))
        return written[0]

    def load_checkpoint(self, path: str, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
        """Load weights, optimizer/scheduler state and `TrainState` from `path` (or from `checkpoint`,
        its content when already read). The saved RNG states are put back when training starts (at
        once if it has), so loading a checkpoint to evaluate leaves the caller's generators alone."""
        if checkpoint is None:
            checkpoint = load_checkpoint(path)  # on the CPU: load_state_dict moves tensors to the model
        load_into(self.model, checkpoint, path)
        self.state = TrainState(**checkpoint["state"])
        if self._training_started and self.state.rng:
            restore_rng(self.state.rng)
        return checkpoint

    def resume(self, target: str | int) -> None:
        """Continue from `target`: a run folder, a run id in the runs dir, or a checkpoint file."""
        path = resolve_checkpoint(target, places.runs_root(self._run))
        checkpoint = self.load_checkpoint(path)
        if self.is_global_zero and self.checkpoint_dir is not None:
            for copy in adopt_checkpoints(path, self.checkpoint_dir):
                self.tracker.add_artifact(copy, os.path.basename(copy))
        if self._run is not None:
            self._run.info["resumed_from"] = {
                "checkpoint": os.path.abspath(path),
                "run_id": checkpoint["run"].get("id"),
                "run_key": checkpoint["run"].get("key"),
                "global_step": self.state.global_step,
            }
        self.state.last_eval_step = self.state.global_step

    # ------------------------------------------------------------------ helpers of the loop
    def _start_training(self) -> None:
        """What training needs beyond the constructor, done once: the process group, the global
        seeds (then a resumed run's saved RNG states), a writable checkpoint folder, the header."""
        if not self._training_started:
            self._training_started = True
            self._join_process_group()
            seed_everything(self.config.get("seed") or 0, self.config["deterministic"])
            if self.state.rng:
                restore_rng(self.state.rng)
            if self.is_global_zero and self.checkpoint_dir is not None:
                check_writable(self.checkpoint_dir, "checkpoint folder", "Pass model_dir=<a folder you can write>")
            split, name = self._eval_split(), self.model.benchmark_metric
            if split is not None:  # which logged metric judges the run: `mlproj runs` shows it
                name = name() if callable(name) else name
                self.tracker.note_benchmark(f"{split}.{name}", bool(self.model.benchmark_lower_is_better))
        if self.is_global_zero:
            print(console.header(self.model, self.config, self.device, self.state.global_step, self.checkpoint_dir), flush=True)

    def _join_process_group(self) -> None:
        """Under torchrun: join the job and wrap the networks in DDP (no-op otherwise, and once)."""
        if distributed.is_distributed():
            distributed.setup(self.device)
            self.model.distribute()

    def _eval_split(self) -> str | None:
        if self.dataset_factory.has_validation_set():
            return "validation"
        return "test" if self.dataset_factory.has_test_set() else None

    def _benchmark_value(self, metrics: dict[str, float]) -> float | None:
        name = self.model.benchmark_metric
        name = name() if callable(name) else name  # the original template made it a method
        return next((v for k, v in metrics.items() if k.split(".", 1)[-1] == name), None)

    def _log_train(self, metrics: dict[str, float]) -> None:
        self.tracker.log_scalars("train", metrics, self.state.global_step)
        if self.model.optimizers:
            self.tracker.log_scalars(None, {"lr": self.model.optimizers[0].param_groups[0]["lr"]}, self.state.global_step)

    def _log_all(self, batch: Any) -> None:
        self.tracker.log_histograms(self.model, self.state.global_step)
        if isinstance(first_tensor(batch), torch.Tensor):
            self.tracker.log_images("train/inputs", first_tensor(batch), self.state.global_step)

    def _interrupt(self) -> None:
        """Save the step reached, say how to continue, and end the run (KeyboardInterrupt)."""
        path, reason = self.save_checkpoint(), self.state.stop_reason
        if self.is_global_zero:
            hint = self._continue_with() if path is not None else ""
            print(console.stopped_line(reason, self.state.global_step, path, hint), flush=True)
        raise KeyboardInterrupt(reason)

    def _continue_with(self) -> str:
        """How to continue this run: config `resume=<its folder or last.pt>`, in the command-line form
        the experiment glue gives its runs (`run.resume_command`), if any."""
        target = places.resume_target(self._run, self.checkpoint_dir)
        command = getattr(self._run, "resume_command", None)
        return command.format(target) if isinstance(command, str) else f"config resume={target}"

    def _progress_bar(self, total: int, initial: int) -> Any:
        n = self.config["n_global_iterations"]
        desc = f"epoch {self.state.epoch + 1}" + ("" if n is not None else f"/{self.config['n_epochs']}")
        terminal = getattr(self._run, "stdout_is_terminal", None)  # known before Sacred's capture began
        return console.progress_bar(total, initial, desc, terminal, self.is_global_zero)


def _is_due(interval: int | str, step: int) -> bool:
    return interval != "epoch" and step % int(interval) == 0


def _test_metrics(model: Model, loader: Any) -> MeanMetrics:
    """`test_batch` metrics over `loader`, the model in eval mode meanwhile."""
    meter = MeanMetrics()
    was_training = model.training  # a loaded run (load_run) stays in eval mode
    model.eval()
    with torch.no_grad():
        for batch in loader:
            batch = to_device(batch, model.device, model.memory_format)
            meter.add(model.test_batch(batch), batch_size(batch))
    model.train(was_training)
    return meter


def _mean_over_ranks(meter: MeanMetrics) -> dict[str, float]:
    if distributed.is_distributed():
        meter.reduce(distributed.all_reduce_sum)  # every rank reaches this at the same step
    return meter.compute()
