"""`MLProject`: pairs a `DatasetFactory` with a `Model` and runs the training loop.

One epoch, top to bottom: point the sampler at the epoch, train on each batch, log on logging steps,
save on save steps, then evaluate, update the best score, call the epoch hooks and write last.pt
(and best.pt when it improved). Whether to stop is decided in one place (`_should_stop`), which
leaves the reason in `TrainState.stop_reason` (a budget spent, a signal, or `request_stop`).
Callbacks (`mlproj.Callback`) are called in list order at the points their hooks name. Counters, best score and RNG state live in one
`TrainState`, saved whole in every checkpoint, so a resumed run continues exactly where the saved
one stopped.

Building a project configures it; the side effects (joining a torchrun process group, seeding the
global generators, opening the TensorBoard writer) wait until it trains or evaluates.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import torch

from mlproj.data.factory import DatasetFactory
from mlproj.errors import MLProjError
from mlproj.train import builtin, console, distributed
from mlproj.train.batches import batch_size, first_tensor, to_device
from mlproj.train.callbacks import Callback, call_hooks, overrides
from mlproj.train.checkpoint import RunCheckpoints, checkpoint_path
from mlproj.train.config import validate_config, with_defaults
from mlproj.train.context import RunContext
from mlproj.train.metrics import MeanMetrics, benchmark_item
from mlproj.train.model import Model
from mlproj.train.predict import dataset_info, predict, project_predict_files
from mlproj.train.schedules import epoch_counts, start_run, step_after_optimizer_step, step_at_epoch_end
from mlproj.train.signals import is_signal_name, stop_on_signals
from mlproj.train.state import TrainState, restore_rng, seed_everything, seeded
from mlproj.train.strategy import Strategy
from mlproj.train.tracker import Tracker
from mlproj.util.device import canonical_device
from mlproj.util.refs import CHECKPOINT_OF

__all__ = ["MLProject", "TrainState"]


class MLProject:
    """Trains `model` on the data of `dataset_factory` as `config` says.

    Subclass and override the static methods `get_dataset_factory(config)`, `get_model(config)` and
    `get_callbacks(config)`, or pass `model=` and `dataset_factory=`; the defaults build what config
    `dataset` and `model` name. Building configures; training or evaluating joins a torchrun job,
    seeds and opens TensorBoard.

    Args:
        config: the config dict (Sacred's `_run.config`); machinery keys missing from it get defaults.
        context: the run that records metrics and checkpoints (`from_run` builds it from a Sacred
            run); None: nothing records, checkpoints go under the default runs folder.
        model: a ready `Model` (else `get_model(config)`).
        dataset_factory: a ready `DatasetFactory` (else `get_dataset_factory(config)`).
        callbacks: `Callback`s called after those of `get_callbacks(config)`, in list order.

    Raises:
        MLProjError: on a bad config value or an unusable `resume` target.

    Example:
        >>> project = MyProject.from_run(_run, callbacks=[MyCallback()])  # in the Sacred main function
        >>> project.train(), project.test()
    """

    def __init__(self, config: dict[str, Any], *, context: RunContext | None = None, model: Model | None = None,
                 dataset_factory: DatasetFactory | None = None, callbacks: list[Callback] | None = None):
        self.config = with_defaults(dict(config))
        validate_config(self.config)
        self.context = context if context is not None else RunContext.unrecorded(self.config)
        self.device = canonical_device(self.config["device"])  # compared with data and model devices only in this form
        self.is_global_zero = distributed.is_global_zero()
        self.dataset_factory, self.model, self.strategy = _build(self, dataset_factory, model)
        self.state, cfg = TrainState(), self.config
        # The run's own callbacks (the recorder's: `mlproj tune --prune` reporting), then the caller's.
        self.callbacks = [*self.get_callbacks(cfg), *self.context.callbacks, *(callbacks or [])]
        self.run_key = self.context.run_key
        self.tracker, self.checkpoints = _recorders(self.context, cfg, self.is_global_zero)
        self.checkpoint_dir = self.checkpoints.folder  # None: no checkpoints (-u)
        self._training_started = False
        if cfg["resume"] is not None:
            self.resume(cfg["resume"])

    # ------------------------------------------------------------------ building blocks
    @classmethod
    def from_run(cls, _run: Any, *, callbacks: list[Callback] | None = None) -> MLProject:
        """Build the project from a Sacred run: its config, and the run to record into."""
        # lazy, and the engine's only import of record/: the Sacred glue, which imports the engine,
        # turns Sacred's run into a RunContext (record/context.py imports no module that imports this one)
        from mlproj.record.context import context_of

        config, context = context_of(_run)
        return cls(config, context=context, callbacks=callbacks)

    # The built-ins (train/builtin.py); override a getter to bring your own: its keys are then yours.
    get_dataset_factory = staticmethod(builtin.get_dataset_factory)
    get_model = staticmethod(builtin.get_model)
    get_callbacks = staticmethod(builtin.get_callbacks)
    check_config = classmethod(builtin.check_config)
    prepare_data = classmethod(builtin.prepare_data)

    # ------------------------------------------------------------------ counters and verbs for callbacks
    global_step = property(lambda self: self.state.global_step, doc="Optimizer steps completed.")
    epoch = property(lambda self: self.state.epoch, doc="Epochs completed (1 in the hooks ending the first epoch).")
    epoch_step = property(lambda self: self.state.epoch_step, doc="Steps completed in the current epoch.")
    best_score = property(lambda self: self.state.best_score, doc="Best value of the benchmark metric so far.")

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Record scalars (`{"validation.f1": 0.91}`) with the run and in TensorBoard at the current step."""
        self.tracker.log_scalars(None, {name: float(value) for name, value in metrics.items()}, self.state.global_step)

    def request_stop(self, reason: str) -> None:
        """End training after the current step, evaluated and saved as at a normal end; the run is
        COMPLETED with `reason` as its `stop_reason` (the first reason given wins)."""
        self.state.stop_reason = self.state.stop_reason or str(reason)

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
        per_epoch = _steps_per_epoch(self.dataset_factory, s.epoch, self.config["accumulate_grad_batches"])
        start_run(self.model.schedulers, self.config["n_global_iterations"] or self.config["n_epochs"] * per_epoch, per_epoch)
        with contextlib.closing(self.tracker):  # however it ends: the event file complete, no idle writer thread
            self.model.on_train_begin()
            call_hooks(self.callbacks, "on_train_begin", self)
            # Epoch-end checkpoints are written while the next epoch trains; with a step interval
            # (save_iterations=N) each save is on disk before training goes on, so a kill -9 loses
            # at most N steps. Leaving the block waits for the last write, still under our signal
            # handlers: a SIGTERM then asks for a stop instead of ending the process mid-write.
            with (stop_on_signals(self._stop_requested, lambda: is_signal_name(self.state.stop_reason)),
                  self.checkpoints.writing(background=self.config["save_iterations"] == "epoch")):
                while not self._should_stop():
                    if self._train_epoch():  # False: stopped mid-epoch
                        s.epoch, s.epoch_step = s.epoch + 1, 0
                        self._evaluate_and_save(epoch_end=True)
                if not is_signal_name(s.stop_reason) and s.last_eval_step != s.global_step:
                    self._evaluate_and_save(epoch_end=False)  # a final evaluation and save mid-epoch
                self.context.sink.set_info("stop_reason", s.stop_reason)
                if is_signal_name(s.stop_reason):
                    self._interrupt()
            self.model.on_train_end()
            call_hooks(self.callbacks, "on_train_end", self)
            self.tracker.log_hparams(self.config, s.global_step)  # TensorBoard's HPARAMS tab
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
        batch, accumulate = None, cfg["accumulate_grad_batches"]
        with _progress_bar(self, epoch_total) as bar:
            for batch in itertools.islice(loader, skip, None):
                batch = to_device(batch, self.strategy.device, self.strategy.memory_format)
                group_size, ends_group = _accumulation_group(s.epoch_step, accumulate, epoch_total)
                with self.strategy.micro_batch(self.model, group_size, ends_group):
                    metrics = self.model.train_batch(batch)
                if ends_group:  # the group's optimizers have stepped
                    self.strategy.after_step()
                    step_after_optimizer_step(self.model.schedulers)
                s.epoch_step += 1
                s.global_step += ends_group  # counts optimizer steps, so hooks see the step just taken
                s.window.add(metrics, batch_size(batch))
                if self.callbacks:  # no callbacks: not even a call per step
                    call_hooks(self.callbacks, "on_train_batch_end", self, metrics)
                bar.update()
                if not ends_group:
                    continue  # logging, saving and stopping happen between optimizer steps
                if s.global_step % cfg["log_iteration_scalars"] == 0:
                    # The only host sync of a training step, and only on logging steps.
                    _log_train(self.tracker, self.model, _mean_over_ranks(s.window), s.global_step)
                    s.window = MeanMetrics()
                if _is_due(cfg["log_iteration_all"], s.global_step):
                    _log_all(self.tracker, self.model, batch, s.global_step)
                if s.epoch_step == epoch_total:
                    break  # the epoch's end logs, evaluates and saves
                if self._should_stop():
                    return False
                if _is_due(cfg["save_iterations"], s.global_step):
                    self.save_checkpoint()
        if cfg["log_iteration_all"] == "epoch" and batch is not None:
            _log_all(self.tracker, self.model, batch, s.global_step)
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
        self.state.stop_reason = reason  # a signal: it overrides a stop already requested

    def _evaluate_and_save(self, epoch_end: bool) -> None:
        """Evaluate, keep the best, call the epoch hook, then checkpoint (holding the scheduler stepped for this epoch)."""
        metrics = self.evaluate()
        item = benchmark_item(self.model, metrics)
        improved = self.state.improve(item and item[1], bool(self.model.benchmark_lower_is_better))
        if self.is_global_zero:
            print(console.progress_line(self.state.epoch, self.state.global_step, metrics, improved), flush=True)
        if epoch_end:
            counts = epoch_counts(self.model.schedulers)
            self.model.on_epoch_end(self.state.epoch - 1, metrics)  # the epoch's index: callbacks' project.epoch - 1
            step_at_epoch_end(self.model.schedulers, counts, self.model.benchmark_value(metrics))
            call_hooks(self.callbacks, "on_epoch_end", self, metrics)
        self.save_checkpoint(best=improved)

    def evaluate(self, split: str | None = None) -> dict[str, float]:
        """Average `test_batch` metrics over `split` (default: validation, else test) and log them."""
        _join_process_group(self.device, self.model, self.strategy)
        split = split or _eval_split(self.dataset_factory)
        self.state.last_eval_step = self.state.global_step
        if split is None:
            return {}
        metrics = _mean_over_ranks(_test_metrics(self.model, self.strategy, self.dataset_factory, split))
        self.tracker.log_scalars(split, metrics, self.state.global_step)
        metrics = {f"{split}.{name}": value for name, value in metrics.items()}
        call_hooks(self.callbacks, "on_evaluate_end", self, split, metrics)
        return metrics

    def test(self) -> dict[str, float]:
        """Evaluate on the test set, log `test.*`, print and return the metrics."""
        if not self.dataset_factory.has_test_set():
            raise MLProjError("this dataset has no test set: evaluate on the validation set with project.evaluate().")
        metrics = self.evaluate("test")
        if self.is_global_zero:
            print("[test] " + console.format_metrics(metrics), flush=True)
        self.tracker.close()
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint dict: plain values and tensors under stable keys."""
        return self.checkpoints.content(self.model, self.state, self.config, data=dataset_info(self.dataset_factory))

    def save_checkpoint(self, best: bool = False) -> str | None:
        """Write last.pt (and best.pt when `best`) atomically, record them with the run and return last.pt's
        path (None without checkpoints: `-u`). `MLProjError` when a write fails: the previous file is kept.
        While `train()` runs with `save_iterations=epoch`, the file is written in the background
        (complete in `on_checkpoint` hooks and once `train()` returns or raises)."""
        path = self.checkpoints.save(self.checkpoint, best, self.state.global_step)
        if path is not None and self.is_global_zero and overrides(self.callbacks, "on_checkpoint"):
            self.checkpoints.flush()  # the hook may read the file: it waits for the write
            call_hooks(self.callbacks, "on_checkpoint", self, path)
        return path

    def load_checkpoint(self, path: str, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
        """Load weights, optimizer/scheduler state and `TrainState` from `path` (or `checkpoint`, its content
        if read already). Its RNG states are put back when training starts: evaluating leaves the caller's alone."""
        checkpoint, self.state = self.checkpoints.load(self.model, path, checkpoint)
        if self._training_started and self.state.rng:
            restore_rng(self.state.rng)
        return checkpoint

    def resume(self, target: str | int) -> None:
        """Continue from `target`: a run folder or a run id in the runs dir (its last.pt), or a checkpoint file."""
        path = checkpoint_path(target, CHECKPOINT_OF["resume"], self.context.runs_dir)
        self.checkpoints.resumed_from(path, self.load_checkpoint(path), self.state.global_step)
        self.state.last_eval_step = self.state.global_step

    # ------------------------------------------------------------------ helpers of the loop
    def _start_training(self) -> None:
        """What training needs beyond the constructor, done once: the process group, the global
        seeds (then a resumed run's saved RNG states), a writable checkpoint folder, the header."""
        if not self._training_started:
            self._training_started = True
            _join_process_group(self.device, self.model, self.strategy)
            seed_everything(self.config.get("seed") or 0, self.config["deterministic"], then=self.state.rng,
                            cudnn_benchmark=self.config["cudnn_benchmark"])
            self.checkpoints.check_writable()
            _note_benchmark(self.tracker, self.model, _eval_split(self.dataset_factory))
        if self.is_global_zero:
            print(console.header(self.model, self.config, self.device, self.state.global_step, self.checkpoint_dir), flush=True)

    def _interrupt(self) -> None:
        """Save the step reached, say how to continue, and end the run (KeyboardInterrupt)."""
        path, reason = self.save_checkpoint(), self.state.stop_reason
        self.checkpoints.flush()  # the line below promises a complete file
        if self.is_global_zero:
            print(console.stopped_line(reason, self.state.global_step, path, self.checkpoints.continue_with), flush=True)
        raise KeyboardInterrupt(reason)

    # ------------------------------------------------------------------ predictions (mlproj/train/predict.py)
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, num_classes) of a batch of model inputs, normalized as the loaders give them."""
        return predict(self.model, images)

    predict_files = project_predict_files  # (self, paths, top_k=3): one row per image, top-k classes


def _steps_per_epoch(factory: DatasetFactory, epoch: int, accumulate: int) -> int:
    """Optimizer steps in a whole epoch: its batches in groups of `accumulate` (`accumulate_grad_batches`)."""
    factory.set_epoch(epoch)  # the whole epoch's length, also when resuming mid-epoch
    return -(-len(factory.train_loader()) // accumulate)


def _accumulation_group(epoch_step: int, accumulate: int, epoch_total: int) -> tuple[int, bool]:
    """The size of the group of batches that batch `epoch_step` belongs to (`accumulate` batches make
    one optimizer step; the epoch's last group may be shorter), and whether it ends its group."""
    group_start = epoch_step - epoch_step % accumulate
    group_size = min(accumulate, epoch_total - group_start)
    return group_size, epoch_step + 1 == group_start + group_size


def _is_due(interval: int | str, step: int) -> bool:
    return interval != "epoch" and step % int(interval) == 0


def _test_metrics(model: Model, strategy: Strategy, factory: DatasetFactory, split: str) -> MeanMetrics:
    """`test_batch` metrics over the `split` ("validation" or "test") of `factory`, the model in eval mode meanwhile."""
    loader = factory.validation_loader() if split == "validation" else factory.test_loader()
    meter = MeanMetrics()
    was_training = model.training  # a loaded run (load_run) stays in eval mode
    model.eval()
    with torch.no_grad():
        for batch in loader:
            batch = to_device(batch, strategy.device, strategy.memory_format)
            meter.add(model.test_batch(batch), batch_size(batch))
    model.train(was_training)
    return meter


def _mean_over_ranks(meter: MeanMetrics) -> dict[str, float]:
    if distributed.is_distributed():
        meter.reduce(distributed.all_reduce_sum)  # every rank reaches this at the same step
    return meter.compute()


# ---------------------------------------------------------------------- helpers of the loop
def _build(project: MLProject, dataset_factory: DatasetFactory | None,
           model: Model | None) -> tuple[DatasetFactory, Model, Strategy]:
    """The project's data and model: those given, else its getters' built under the config's seed
    in a scope of its own (the initial weights are the seed's; the caller's generators are neither
    drawn from nor reseeded); the data sharded for this rank under torchrun, the model set up by
    the `Strategy` the config describes (device, precision, compile, clipping).
    `project.dataset_factory` is set before `get_model` runs: a `get_model` may size its net from it."""
    cfg = project.config
    with seeded(cfg.get("seed") or 0):
        project.dataset_factory = dataset_factory if dataset_factory is not None else project.get_dataset_factory(cfg)
        model = model if model is not None else project.get_model(cfg)
    dataset_factory = project.dataset_factory
    if distributed.is_distributed():
        dataset_factory.shard(distributed.rank(), distributed.world_size())
    strategy = Strategy(project.device, **{key: cfg[key] for key in ("amp", "compile", "channels_last", "grad_clip_norm")})
    strategy.setup(model)
    return dataset_factory, model, strategy


def _recorders(context: RunContext, cfg: dict[str, Any], is_global_zero: bool) -> tuple[Tracker, RunCheckpoints]:
    """Where the run's metrics and checkpoints go. Only rank 0 records (the other ranks' Sacred
    runs are unobserved: record.experiment). The tracker opens its TensorBoard writer on its first write."""
    tracker = Tracker(context.sink if is_global_zero else None, context.tensorboard_dir if is_global_zero else None,
                      prefix=cfg["prefix"], config_updates=context.config_updates)
    return tracker, RunCheckpoints(context, tracker, is_global_zero)


def _join_process_group(device: Any, model: Model, strategy: Strategy) -> None:
    """Under torchrun: join the job and wrap the networks in DDP (no-op otherwise, and once)."""
    if distributed.is_distributed():
        distributed.setup(device)
        strategy.distribute(model)


def _note_benchmark(tracker: Tracker, model: Model, split: str | None) -> None:
    """Note with the run which logged metric judges it (`mlproj runs` shows it first)."""
    if split is not None:
        name = model.benchmark_metric() if callable(model.benchmark_metric) else model.benchmark_metric
        tracker.note_benchmark(f"{split}.{name}", bool(model.benchmark_lower_is_better))


def _eval_split(factory: DatasetFactory) -> str | None:
    if factory.has_validation_set():
        return "validation"
    return "test" if factory.has_test_set() else None


def _log_train(tracker: Tracker, model: Model, metrics: dict[str, float], step: int) -> None:
    tracker.log_scalars("train", metrics, step)
    if model.optimizers:
        tracker.log_scalars(None, {"lr": model.optimizers[0].param_groups[0]["lr"]}, step)


def _log_all(tracker: Tracker, model: Model, batch: Any, step: int) -> None:
    tracker.log_histograms(model, step)
    if isinstance(first_tensor(batch), torch.Tensor):
        tracker.log_images("train/inputs", first_tensor(batch), step)


def _progress_bar(project: MLProject, total: int) -> Any:
    cfg, state = project.config, project.state
    desc = f"epoch {state.epoch + 1}" + ("" if cfg["n_global_iterations"] is not None else f"/{cfg['n_epochs']}")
    return console.progress_bar(total, state.epoch_step, desc, project.context.stdout_is_terminal, project.is_global_zero)
