"""`MLProject`: pairs a `DatasetFactory` with a `Model` and runs the training loop.

One epoch, top to bottom: point the sampler at the epoch, train on each batch, log on logging steps,
save on save steps, then evaluate, update the best score, call the epoch hook and write last.pt
(and best.pt when it improved). Counters, best score and RNG state live in one `TrainState`,
saved whole in every checkpoint, so a resumed run continues exactly where the saved one stopped.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from mlproj.data.factory import DatasetFactory
from mlproj.errors import MLProjError
from mlproj.train import distributed
from mlproj.train.checkpoint import FORMAT, atomic_save, load_checkpoint, resolve_checkpoint
from mlproj.train.config import runs_dir, tensorboard_root, validate_config, with_defaults
from mlproj.train.metrics import MeanMetrics
from mlproj.train.model import Model
from mlproj.train.predict import dataset_info, predict, project_predict_files
from mlproj.train.state import capture_rng, restore_rng, seed_everything
from mlproj.train.tracker import Tracker
from mlproj.util.device import local_device, resolve_device
from mlproj.util.files import atomic_copy, check_writable, describe_os_error


@dataclass
class TrainState:
    """Everything that changes while training, saved whole in each checkpoint."""

    epoch: int = 0  # epochs completed
    global_step: int = 0  # optimizer steps completed
    epoch_step: int = 0  # steps completed within the current epoch
    best_score: float | None = None  # best value of the model's benchmark metric so far
    best_step: int | None = None  # global_step at which best_score was reached
    rng: dict[str, Any] = field(default_factory=dict)  # every RNG's state, captured at save time


class MLProject:
    """Trains `model` on the data of `dataset_factory` as `config` says.

    Subclass and override `get_dataset_factory(config)` and `get_model(config)` (static methods, as
    in the original template), or pass `model=` and `dataset_factory=` directly. The defaults build
    what config keys `dataset` and `model` name.

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

    def __init__(
        self,
        config: dict[str, Any],
        _run: Any = None,
        *,
        model: Model | None = None,
        dataset_factory: DatasetFactory | None = None,
    ):
        self.config = with_defaults(dict(config))
        validate_config(self.config)
        self._run = _run
        self.device = local_device(resolve_device(self.config["device"]))
        distributed.setup(self.device)  # under torchrun: join the job (no-op otherwise)
        self.is_global_zero = distributed.is_global_zero()
        seed_everything(self.config.get("seed") or 0, self.config["deterministic"])
        self.dataset_factory = dataset_factory if dataset_factory is not None else self.get_dataset_factory(self.config)
        if distributed.is_distributed():
            self.dataset_factory.shard(distributed.rank(), distributed.world_size())
        self.model = model if model is not None else self.get_model(self.config)
        self.model.setup(
            self.device,
            amp=self.config["amp"],
            compile=self.config["compile"],
            channels_last=self.config["channels_last"],
            distributed=distributed.is_distributed(),
        )
        self.state = TrainState()
        self.run_key = self._run_info("run_key") or f"unobserved-{uuid.uuid4().hex[:8]}"
        self.checkpoint_dir = self._checkpoint_dir()  # None: this run writes no checkpoints (-u)
        if self.is_global_zero and self.checkpoint_dir is not None:
            check_writable(self.checkpoint_dir, "checkpoint folder", "Pass model_dir=<a folder you can write>")
        # Only rank 0 records; the other ranks' Sacred runs are unobserved (experiment._create_run).
        tensorboard = self._tensorboard_run_dir() if self.is_global_zero else None
        self.tracker = Tracker(_run if self.is_global_zero else None, tensorboard, prefix=self.config["prefix"])
        self._stop_signal: int | None = None
        self._last_eval_step: int | None = None
        self._window = MeanMetrics()
        if self.config["resume"] is not None:
            self.resume(self.config["resume"])

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
        """
        self._print_header()
        self._window = MeanMetrics()  # train metrics since the last logging step, across epochs
        self.model.on_train_begin()
        with self._stop_on_signals():
            while not self._finished():
                if not self._train_epoch():
                    break  # n_global_iterations reached mid-epoch
                self.state.epoch += 1
                self.state.epoch_step = 0
                self._end_of_period(epoch_end=True)
            if self._last_eval_step != self.state.global_step:
                self._end_of_period(epoch_end=False)  # a final evaluation and save mid-epoch
        self.model.on_train_end()
        self.tracker.log_hparams(self.config, self.state.global_step)  # TensorBoard's HPARAMS tab
        self.tracker.flush()
        return self.state.best_score

    def _train_epoch(self) -> bool:
        """One (possibly resumed) epoch; False when training had to stop before its end."""
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
                batch = self._to_device(batch)
                metrics = self.model.train_batch(batch)
                self.model.after_batch()
                s.global_step += 1
                s.epoch_step += 1
                self._window.add(metrics, _batch_size(batch))
                bar.update()
                if s.global_step % cfg["log_iteration_scalars"] == 0:
                    # The only host sync of a training step, and only on logging steps.
                    self._log_train(_mean_over_ranks(self._window))
                    self._window = MeanMetrics()
                if _is_due(cfg["log_iteration_all"], s.global_step):
                    self._log_all(batch)
                if s.epoch_step == epoch_total:
                    break  # the epoch's end logs, evaluates and saves
                if self._stop_signal is not None:
                    self._interrupt()
                if self._finished():
                    return False
                if _is_due(cfg["save_iterations"], s.global_step):
                    self.save_checkpoint()
        if cfg["log_iteration_all"] == "epoch" and batch is not None:
            self._log_all(batch)
        return True

    def _end_of_period(self, epoch_end: bool) -> None:
        """Evaluate, keep the best, call the epoch hook, then checkpoint (in that order, so the
        checkpoint holds the scheduler already stepped for this epoch)."""
        metrics = self.evaluate()
        improved = self._update_best(metrics)
        self._print_progress(metrics, improved)
        if epoch_end:
            self.model.on_epoch_end(self.state.epoch - 1, metrics)
        self.save_checkpoint(best=improved)
        if self._stop_signal is not None:
            self._interrupt()

    def evaluate(self, split: str | None = None) -> dict[str, float]:
        """Average `test_batch` metrics over `split` (default: validation, else test) and log them."""
        split = split or self._eval_split()
        self._last_eval_step = self.state.global_step
        if split is None:
            return {}
        loader = self.dataset_factory.validation_loader() if split == "validation" else self.dataset_factory.test_loader()
        meter = MeanMetrics()
        was_training = self.model.training  # a loaded run (load_run) stays in eval mode
        self.model.eval()
        with torch.no_grad():
            for batch in loader:
                batch = self._to_device(batch)
                meter.add(self.model.test_batch(batch), _batch_size(batch))
        self.model.train(was_training)
        metrics = _mean_over_ranks(meter)
        self.tracker.log_scalars(split, metrics, self.state.global_step)
        return {f"{split}.{name}": value for name, value in metrics.items()}

    def test(self) -> dict[str, float]:
        """Evaluate on the test set, log `test.*`, print and return the metrics."""
        if not self.dataset_factory.has_test_set():
            raise MLProjError("this dataset has no test set: evaluate on the validation set with project.evaluate().")
        metrics = self.evaluate("test")
        if self.is_global_zero:
            print("[test] " + _format_metrics(metrics), flush=True)
        self.tracker.flush()
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint dict: plain values and tensors under stable keys."""
        self.state.rng = capture_rng()
        return {
            "format": FORMAT,
            **self.model.training_state(),  # model, optimizers, schedulers, scaler
            "state": asdict(self.state),
            "config": json.loads(json.dumps(self.config, default=str)),
            "data": dataset_info(self.dataset_factory),  # input shape, class names, normalization: for predict
            "run": {"id": self._run_id(), "key": self.run_key, "git": self._run_info("git")},
        }

    def save_checkpoint(self, best: bool = False) -> str | None:
        """Write last.pt (and best.pt when `best`) atomically and record them with the run.

        Returns:
            The path of last.pt, or None when this run writes no checkpoints (`-u` without `model_dir`).

        Raises:
            MLProjError: when the write fails (disk full, folder gone); the previous file is kept.
        """
        if self.checkpoint_dir is None:
            return None
        last = os.path.join(self.checkpoint_dir, "last.pt")
        best_path = os.path.join(self.checkpoint_dir, "best.pt")
        if not self.is_global_zero:
            return last  # every rank holds the same weights; rank 0 writes them
        writing = last
        try:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
            atomic_save(self.checkpoint(), last)
            if best:
                writing = best_path
                atomic_copy(last, best_path)
        except OSError as err:
            # A full disk must not cost the last good checkpoint: atomic writes left it in place.
            raise MLProjError(
                f"writing checkpoint {writing} failed at step "
                f"{self.state.global_step} ({describe_os_error(err)}); the previous checkpoint is kept. Free space "
                f"or pass model_dir=<another folder>, then continue with `./main.py with resume={self._resume_hint()}`."
            ) from None
        self.tracker.add_artifact(last, "last.pt")
        if best:
            self.tracker.add_artifact(best_path, "best.pt")
        return last

    def load_checkpoint(self, path: str, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
        """Load weights, optimizer/scheduler state and `TrainState` from `path` (or from `checkpoint`,
        its content when already read); restore the RNGs."""
        # On the CPU: RNG states must stay there, and load_state_dict moves weights and optimizer
        # state to the model's device by itself.
        if checkpoint is None:
            checkpoint = load_checkpoint(path)
        try:
            self.model.load_training_state(checkpoint)
        except (RuntimeError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0][:200]
            raise MLProjError(
                f"checkpoint {path} does not fit this model ({first}): it was written for another model "
                "or dataset; resume or test with the config of the run that wrote it."
            ) from None
        self.state = TrainState(**checkpoint["state"])
        if self.state.rng:
            restore_rng(self.state.rng)
        return checkpoint

    def resume(self, target: str | int) -> None:
        """Continue from `target`: a run folder, a run id in the runs dir, or a checkpoint file."""
        path = resolve_checkpoint(target, self._runs_root())
        checkpoint = self.load_checkpoint(path)
        # The new run's folder starts with the checkpoints it continues from, so it is complete
        # even when nothing is left to train (a run killed after its last save).
        for name in ("last.pt", "best.pt") if self.checkpoint_dir is not None else ():
            source = os.path.join(os.path.dirname(path), name)
            target = os.path.join(self.checkpoint_dir, name)
            if (self.is_global_zero and os.path.basename(path) == "last.pt" and os.path.exists(source)
                    and not os.path.exists(target)):
                os.makedirs(self.checkpoint_dir, exist_ok=True)
                atomic_copy(source, target)
                self.tracker.add_artifact(target, name)
        if self._run is not None:
            self._run.info["resumed_from"] = {
                "checkpoint": os.path.abspath(path),
                "run_id": checkpoint["run"].get("id"),
                "run_key": checkpoint["run"].get("key"),
                "global_step": self.state.global_step,
            }
        self._last_eval_step = self.state.global_step

    # ------------------------------------------------------------------ helpers of the loop
    def _finished(self) -> bool:
        n_steps = self.config["n_global_iterations"]
        if n_steps is not None:
            return self.state.global_step >= n_steps
        return self.state.epoch >= self.config["n_epochs"]

    def _eval_split(self) -> str | None:
        if self.dataset_factory.has_validation_set():
            return "validation"
        return "test" if self.dataset_factory.has_test_set() else None

    def _benchmark(self) -> tuple[str, bool]:
        name = self.model.benchmark_metric
        name = name() if callable(name) else name  # the original template made it a method
        return name, bool(self.model.benchmark_lower_is_better)

    def _update_best(self, metrics: dict[str, float]) -> bool:
        name, lower_is_better = self._benchmark()
        value = next((v for k, v in metrics.items() if k.split(".", 1)[-1] == name), None)
        if value is None:
            return False
        best = self.state.best_score
        if best is not None and (value >= best if lower_is_better else value <= best):
            return False
        self.state.best_score, self.state.best_step = value, self.state.global_step
        return True

    def _log_train(self, metrics: dict[str, float]) -> None:
        self.tracker.log_scalars("train", metrics, self.state.global_step)
        if self.model.optimizers:
            self.tracker.log_scalars(None, {"lr": self.model.optimizers[0].param_groups[0]["lr"]}, self.state.global_step)

    def _log_all(self, batch: Any) -> None:
        self.tracker.log_histograms(self.model, self.state.global_step)
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        if isinstance(inputs, torch.Tensor):
            self.tracker.log_images("train/inputs", inputs, self.state.global_step)

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            # non_blocking: from pinned memory (loader_options pins on CUDA) the copy overlaps compute.
            if batch.dim() == 4:
                return batch.to(self.model.device, non_blocking=True, memory_format=self.model.memory_format)
            return batch.to(self.model.device, non_blocking=True)
        if isinstance(batch, (tuple, list)):
            return type(batch)(self._to_device(item) for item in batch)
        if isinstance(batch, dict):
            return {key: self._to_device(value) for key, value in batch.items()}
        return batch

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM finish the current step, write last.pt, then end the run INTERRUPTED.
        A second signal stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            self._stop_signal = signum

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _interrupt(self) -> None:
        path = self.save_checkpoint()
        name = signal.Signals(self._stop_signal).name
        if self.is_global_zero and path is None:
            print(f"\n{name}: stopped at step {self.state.global_step}; no checkpoint saved (the run records nothing; "
                  "pass model_dir=DIR to keep checkpoints)", flush=True)
        elif self.is_global_zero:
            print(f"\n{name}: saved {path}; continue with `./main.py with resume={self._resume_hint()}`", flush=True)
        raise KeyboardInterrupt(name)

    def _progress_bar(self, total: int, initial: int) -> Any:
        """The epoch's progress bar, drawn only when stdout is a terminal: redirected output
        (`> log.txt`, a SLURM log) gets the printed lines alone, with no `\r` redraws.

        It goes to stdout, not stderr: Sacred's capture tees the two through separate processes,
        and a redraw sent through stderr could land in the middle of the line printed before it.
        """
        from tqdm import tqdm

        # tqdm's monitor thread can redraw a bar just after it closed, over the line printed next.
        tqdm.monitor_interval = 0
        n = self.config["n_global_iterations"]
        desc = f"epoch {self.state.epoch + 1}" + ("" if n is not None else f"/{self.config['n_epochs']}")
        terminal = getattr(self._run, "stdout_is_terminal", None)  # known before Sacred's capture began
        if terminal is None:
            terminal = _isatty(sys.stdout)
        return tqdm(total=total, initial=initial, desc=desc, file=sys.stdout, mininterval=1.0, dynamic_ncols=True,
                    leave=False, disable=not (terminal and self.is_global_zero))

    def _print_header(self) -> None:
        if not self.is_global_zero:
            return
        n_steps, n_epochs = self.config["n_global_iterations"], self.config["n_epochs"]
        what = _count(n_steps, "step") if n_steps else _count(n_epochs, "epoch")
        start = f", resuming at step {self.state.global_step}" if self.state.global_step else ""
        name = self.model.name()
        if type(self.model).__name__ == name and "model" in self.config and "dataset" in self.config:
            name = f"{self.config['model']} on {self.config['dataset']}"  # the config-built classifier
        saving = f"checkpoints in {self.checkpoint_dir}" if self.checkpoint_dir else "no checkpoints (pass model_dir=DIR to keep them)"
        print(f"Training {name} ({self.device}) for {what}{start}; {saving}", flush=True)

    def _print_progress(self, metrics: dict[str, float], improved: bool) -> None:
        if not self.is_global_zero:
            return
        mark = "  (best)" if improved else ""
        print(f"epoch {self.state.epoch} step {self.state.global_step}: {_format_metrics(metrics)}{mark}", flush=True)

    # ------------------------------------------------------------------ where things go
    def _run_info(self, key: str) -> Any:
        return self._run.info.get(key) if self._run is not None else None

    def _run_id(self) -> Any:
        return getattr(self._run, "_id", None)

    def _file_observer_dir(self) -> str | None:
        for observer in getattr(self._run, "observers", []):
            if getattr(observer, "dir", None) and hasattr(observer, "basedir"):
                return observer.dir
        return None

    def _runs_root(self) -> str:
        """Where a run id given to `resume` is looked up."""
        return self._recording_root() or runs_dir()

    def _recording_root(self) -> str | None:
        """The runs folder this project records into: the file observer's (`-F DIR`), None for a
        Sacred run that records nothing (`-u`), else the default one."""
        run_dir = self._file_observer_dir()
        if run_dir:
            return os.path.dirname(run_dir)
        return None if getattr(self._run, "unobserved", False) else runs_dir()

    def _checkpoint_dir(self) -> str | None:
        if self.config["model_dir"]:
            return os.path.join(self.config["model_dir"], self.run_key)
        if self._file_observer_dir():
            return self._file_observer_dir()
        root = self._recording_root()
        return os.path.join(root, "checkpoints", self.run_key) if root else None

    def _tensorboard_run_dir(self) -> str | None:
        root = tensorboard_root(self.config["tensorboard_dir"], self._recording_root())
        if not root:
            return None
        run_id = self._run_id()
        if run_id is None:
            return os.path.join(root, self.run_key)
        return os.path.join(root, f"{run_id}_{self._run.experiment_info['name']}_{self.run_key[-8:]}")

    def _resume_hint(self) -> str:
        """What `resume=` takes to continue this run: its run folder, else its last.pt."""
        return self._file_observer_dir() or os.path.join(self.checkpoint_dir, "last.pt")

    # ------------------------------------------------------------------ predictions (mlproj/train/predict.py)
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, num_classes) of a batch of model inputs, normalized as the loaders give them."""
        return predict(self.model, images)

    def predict_files(self, paths: str | os.PathLike | list[str], top_k: int = 3) -> list[dict[str, Any]]:
        """One row per image (`path`, `label`, `probability`, then the top-k) of image files or folders."""
        return project_predict_files(self, paths, top_k)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a stand-in without isatty, or closed
        return False


def _is_due(interval: int | str, step: int) -> bool:
    return interval != "epoch" and step % int(interval) == 0


def _mean_over_ranks(meter: MeanMetrics) -> dict[str, float]:
    if distributed.is_distributed():
        meter.reduce(distributed.all_reduce_sum)  # every rank reaches this at the same step
    return meter.compute()


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else next(iter(batch.values())) if isinstance(batch, dict) else batch
    return int(first.shape[0]) if isinstance(first, torch.Tensor) else 1


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items()))
