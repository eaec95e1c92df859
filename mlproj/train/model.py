"""`Model`: the user's contract, an `nn.Module` that owns its optimizers and schedulers and knows
how to train on a batch.

The training loop (`MLProject`) never touches an optimizer: it calls `train_batch` and `test_batch`,
which return metric dicts. Device, precision, DDP and gradient accumulation are the loop's
machinery (`mlproj.train.strategy.Strategy`); a model reaches them through three verbs,
`autocast()`, `backward(loss)` and `step(optimizer)`, so the same `train_batch` runs in fp32, bf16
or fp16, on any device, with or without `accumulate_grad_batches`. Schedulers are stepped by the
loop too, after the hooks, so overriding a hook cannot freeze the learning rate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from mlproj.data import dataset_shape, dataset_spec
from mlproj.errors import invalid_config
from mlproj.nets import check_net_name, create_net
from mlproj.train.config import check_number
from mlproj.train.metrics import benchmark_item
from mlproj.train.schedules import LRSchedule, check_schedule_config, start_run, step_after_optimizer_step
from mlproj.train.strategy import Strategy

Metrics = dict[str, Any]


class Model(nn.Module):
    """Holds the network, its optimizers and schedulers, and the per-batch train and test steps.

    Subclasses implement `train_batch` and `test_batch` and put their optimizers in
    `self.optimizers` (and schedulers in `self.schedulers`) so that checkpoints include them.

    Attributes:
        benchmark_metric: the name of the `test_batch` metric that decides which checkpoint is best.
        benchmark_lower_is_better: whether a lower benchmark value is better (True for a loss).
    """

    benchmark_metric: str = "loss"
    benchmark_lower_is_better: bool = True

    def __init__(self) -> None:
        super().__init__()
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[Any] = []
        # How the verbs run: the loop's `Strategy` once a project sets the model up (`Strategy.setup`).
        self._strategy = Strategy()

    # ----------------------------------------------------------------- what subclasses write
    def train_batch(self, batch: Any) -> Metrics:
        """Forward, backward and optimizer step on one batch; return metrics (tensors or floats).

        Return tensors detached and unreduced to Python numbers: the loop turns them into floats
        only on logging steps, so no step waits on the device otherwise.
        """
        raise NotImplementedError("Implement Model.train_batch(batch) -> dict of metrics.")

    def test_batch(self, batch: Any) -> Metrics:
        """Evaluate one batch (under `torch.no_grad`); return metrics averaged over the batch."""
        raise NotImplementedError("Implement Model.test_batch(batch) -> dict of metrics.")

    # ----------------------------------------------------------------- hooks (no-ops to override)
    def on_train_begin(self) -> None:
        """Called once before the first training step (also when resuming)."""

    def on_train_end(self) -> None:
        """Called once after training ends."""

    def on_epoch_begin(self, epoch: int) -> None:
        """Called before each epoch; `epoch` is its index from 0: the epochs completed before it
        (`project.epoch` while it runs)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float] | None = None) -> None:
        """Called after each epoch's evaluation with its index `epoch` (from 0, as `on_epoch_begin`:
        `project.epoch` is `epoch + 1` now, as callbacks see it) and its metrics
        (e.g. `{'validation.loss': ...}`).

        After this hook the loop steps every scheduler in `self.schedulers` once
        (`schedules.step_at_epoch_end`: a `ReduceLROnPlateau` with the benchmark value), except one
        this hook stepped itself: step your own with a metric of your choice here if you like
        (`self.plateau.step(metrics["validation.loss"])`); no `super()` call is needed.
        """

    def benchmark_value(self, metrics: dict[str, float]) -> float | None:
        """The value of `benchmark_metric` in evaluation `metrics` (`{'validation.accuracy': ...}`), if there."""
        item = benchmark_item(self, metrics)
        return item[1] if item is not None else None

    def name(self) -> str:
        """The model's name, used in run labels."""
        return type(self).__name__

    # ----------------------------------------------------------------- verbs for train_batch
    @property
    def device(self) -> torch.device:
        """Where the loop puts the model and its batches (the CPU until a project sets the model up)."""
        return self._strategy.device

    @device.setter
    def device(self, device: str | torch.device) -> None:
        self._strategy.device = torch.device(device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context for forward passes (config `amp`; a no-op in fp32)."""
        return self._strategy.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        """`loss.backward()`, scaled when training in fp16, divided by the size of the batch's
        accumulation group (so a group's gradients are its batches' mean)."""
        self._strategy.backward(loss)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """At the end of an accumulation group: clip (config `grad_clip_norm`), `optimizer.step()`,
        then zero the gradients; in fp16 unscale first and skip inf/nan steps. A no-op inside a group.

        With `accumulate_grad_batches` > 1, leave zeroing the gradients to this verb: a
        `zero_grad()` of your own before `backward` would drop the group's earlier batches.
        """
        self._strategy.step(optimizer)

    # ----------------------------------------------------------------- set up outside a project
    def setup(
        self,
        device: str | torch.device,
        amp: str = "off",
        *,
        compile: bool = False,
        channels_last: bool = False,
        distributed: bool = False,
        grad_clip_norm: float | None = None,
    ) -> None:
        """Move the model to `device` and choose its precision (`off`, `bf16` or `fp16`), as a
        project does from its config (a `Strategy` of these arguments; see its docs for each)."""
        Strategy(device, amp, compile=compile, channels_last=channels_last,
                 grad_clip_norm=grad_clip_norm).setup(self, distributed=distributed)

    def distribute(self) -> None:
        """Wrap each network in `DistributedDataParallel` (under torchrun); see `Strategy.distribute`."""
        self._strategy.distribute(self)

    scaler = property(lambda self: self._strategy.scaler, doc="The fp16 `GradScaler` (None in fp32 and bf16).")
    amp_dtype = property(lambda self: self._strategy.amp_dtype, doc="The autocast dtype (None in fp32).")
    memory_format = property(lambda self: self._strategy.memory_format, doc="How 4-D weights and images are stored.")
    grad_clip_norm = property(lambda self: self._strategy.grad_clip_norm, doc="The gradient norm `step` clips to (None: no clipping).")

    def micro_batch(self, group_size: int = 1, ends_group: bool = True) -> contextlib.AbstractContextManager:
        """The context of one `train_batch` (and `after_batch`) in a gradient-accumulation group of
        `group_size` batches, `ends_group` on its last (see `Strategy.micro_batch`)."""
        return self._strategy.micro_batch(self, group_size, ends_group)

    def after_batch(self) -> None:
        """After a `train_batch` driven outside a project, as the loop does after each: at a
        group's end, update the fp16 loss scale once and advance the `LRSchedule`s by one step."""
        if self._strategy.group[1]:
            self._strategy.after_step()
            step_after_optimizer_step(self.schedulers)

    def set_run_length(self, total_steps: int, steps_per_epoch: int) -> None:
        """Tell the `LRSchedule`s the run's length in optimizer steps, as the loop does before training."""
        start_run(self.schedulers, total_steps, steps_per_epoch)

    # ----------------------------------------------------------------- checkpoint state
    def training_state(self) -> dict[str, Any]:
        """Weights plus optimizer, scheduler and grad-scaler state: what resuming needs."""
        return self._strategy.training_state(self)

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what `training_state` returned."""
        self._strategy.load_training_state(self, state)


def _batch_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == labels).float().mean()


class ClassificationModel(Model):
    """A network, an optimizer and a loss for (inputs, labels) batches; reports `loss` and `accuracy`.

    Args:
        net: the network, mapping inputs to logits.
        optimizer: an optimizer over `net.parameters()`.
        loss: the loss module, e.g. `nn.CrossEntropyLoss()`.
        scheduler: an optional LR scheduler, stepped once per epoch (an `LRSchedule`: per
            optimizer step).

    Example:
        >>> net = nn.Linear(64, 10)
        >>> model = ClassificationModel(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss())
        >>> model = ClassificationModel.from_config(net, config)  # optimizer, loss and schedule from config
    """

    benchmark_metric = "accuracy"
    benchmark_lower_is_better = False

    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer, loss: nn.Module, scheduler: Any = None):
        super().__init__()
        self.net = net
        self.loss = loss
        self.optimizer = optimizer
        self.optimizers = [optimizer]
        self.schedulers = [scheduler] if scheduler is not None else []

    @classmethod
    def from_config(cls, net: nn.Module, config: dict[str, Any]) -> ClassificationModel:
        """`net` with the optimizer (`optimizer`, `lr`, `weight_decay`), the cross-entropy loss
        (`label_smoothing`) and the LR schedule (`scheduler`, `warmup_steps`, ...) config describes.

        Raises:
            MLProjError: on a bad optimizer, `label_smoothing` or schedule value.
        """
        check_classifier_config(config)
        optimizer = create_optimizer(config, net.parameters())
        loss = nn.CrossEntropyLoss(label_smoothing=float(config.get("label_smoothing", 0.0)))
        return cls(net, optimizer, loss, LRSchedule.from_config(optimizer, config, cls.benchmark_lower_is_better))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def train_batch(self, batch: Any) -> Metrics:
        inputs, labels = batch
        with self.autocast():
            logits = self.net(inputs)
            loss = self.loss(logits, labels)
        self.backward(loss)  # `step` zeroes the gradients once it has used them
        self.step(self.optimizer)
        return {"loss": loss.detach(), "accuracy": _batch_accuracy(logits.detach(), labels)}

    def test_batch(self, batch: Any) -> Metrics:
        inputs, labels = batch
        with self.autocast():
            logits = self.net(inputs)
            loss = self.loss(logits, labels)
        return {"loss": loss.detach(), "accuracy": _batch_accuracy(logits, labels)}


class SimpleModel(ClassificationModel):
    """The original template's model: `SimpleModel(name, model, optimizer, loss)`.

    Kept so projects written for `mlproject` run unchanged; it reports `loss` and `accuracy` and
    picks the best checkpoint by accuracy, like `ClassificationModel`.
    """

    def __init__(self, name: str, model: nn.Module, optimizer: torch.optim.Optimizer, loss: nn.Module, device: Any = None):
        super().__init__(model, optimizer, loss)
        self._name = name
        # The original's `device` argument moved the batches; here `MLProject` places model and data.

    @property
    def model(self) -> nn.Module:
        return self.net

    def name(self) -> str:
        return self._name


# The optimizers the built-in `create_optimizer` builds, by config `optimizer`.
OPTIMIZERS = ("adam", "sgd")


def check_optimizer_config(config: dict[str, Any]) -> None:
    """`MLProjError` unless config `optimizer`, `lr` and `weight_decay` are values `create_optimizer` takes."""
    if config.get("optimizer", "adam") not in OPTIMIZERS:
        raise invalid_config("optimizer", config["optimizer"], " or ".join(repr(name) for name in OPTIMIZERS))
    check_number(config, "lr", low=0, low_inclusive=False, expected="a number > 0, e.g. lr=0.001")
    check_number(config, "weight_decay", low=0, low_inclusive=True, expected="a number >= 0")


def check_model_config(config: dict[str, Any]) -> None:
    """`MLProjError` unless config `model` names a built-in net, `dataset` a registered dataset (its
    input shape and classes size the net) and the classifier keys are valid (`check_classifier_config`)."""
    if "model" in config:
        check_net_name(config["model"])
    if "dataset" in config:
        dataset_spec(config["dataset"])
    check_classifier_config(config)


def check_classifier_config(config: dict[str, Any]) -> None:
    """`MLProjError` unless the keys `ClassificationModel.from_config` reads are valid: the optimizer's
    (`check_optimizer_config`), `label_smoothing` and the schedule's. A user's own model name is not checked."""
    check_optimizer_config(config)
    smoothing = config.get("label_smoothing", 0.0)
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
        raise invalid_config("label_smoothing", smoothing, "a number in [0, 1), e.g. label_smoothing=0.1")
    check_schedule_config(config)


def create_optimizer(config: dict[str, Any], params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer named by config `optimizer` (`adam` or `sgd`) with `lr` and `weight_decay`.

    Raises:
        MLProjError: on a value `check_optimizer_config` refuses.
    """
    check_optimizer_config(config)
    lr, weight_decay = config.get("lr", 1e-3), config.get("weight_decay", 0.0)
    if config.get("optimizer", "adam") == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def create_model(
    config: dict[str, Any],
    *,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> ClassificationModel:
    """The classifier that config keys `model`, `pretrained` and `dataset` describe, trained as
    `ClassificationModel.from_config` reads the config; `input_shape`/`num_classes` given win over the
    dataset's (prediction builds the net from a checkpoint's without reading the data)."""
    check_model_config(config)
    if input_shape is None or num_classes is None:
        input_shape, num_classes = dataset_shape(config)
    net = create_net(config["model"], input_shape, num_classes, pretrained=config.get("pretrained"))
    return ClassificationModel.from_config(net, config)
