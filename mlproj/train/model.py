"""`Model`: an `nn.Module` that owns its optimizers and schedulers and knows how to train on a batch.

The training loop (`MLProject`) never touches an optimizer: it calls `train_batch` and `test_batch`,
which return metric dicts. Devices and precision are set up once by the project (`setup`); a model
uses three verbs for them, `autocast()`, `backward(loss)` and `step(optimizer)`, so the same
`train_batch` runs in fp32, bf16 or fp16 on any device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

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
        self.device = torch.device("cpu")
        self.amp_dtype: torch.dtype | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.memory_format = torch.contiguous_format
        self._ddp_wrapped: list[str] = []  # children that setup() wrapped in DistributedDataParallel

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
        """Called before each epoch; `epoch` counts from 0."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float] | None = None) -> None:
        """Called after each epoch's evaluation with its metrics (e.g. `{'validation.loss': ...}`).

        The default steps every scheduler once per epoch; override to step them per batch, or to
        pass a metric (`ReduceLROnPlateau.step(metrics["validation.loss"])`).
        """
        for scheduler in self.schedulers:
            scheduler.step()

    def name(self) -> str:
        """The model's name, used in run labels."""
        return type(self).__name__

    # ----------------------------------------------------------------- devices and precision
    def setup(
        self,
        device: str | torch.device,
        amp: str = "off",
        *,
        compile: bool = False,
        channels_last: bool = False,
        distributed: bool = False,
    ) -> None:
        """Move the model to `device` and choose its precision (`off`, `bf16` or `fp16`).

        Args:
            compile: `torch.compile` each network (each child module with parameters), in place,
                so parameter names and checkpoints stay those of the plain network.
            channels_last: store 4-D weights channels-last (the loop feeds images the same way).
            distributed: wrap each network in `DistributedDataParallel` (under torchrun).
        """
        self.device = torch.device(device)
        self.to(self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.to(memory_format=torch.channels_last)
        networks = [name for name, child in self.named_children() if any(True for _ in child.parameters())]
        for name in networks:
            if compile:
                getattr(self, name).compile()
            if distributed:
                from mlproj.train import distributed as dist

                self._ddp_wrapped.append(name)
                setattr(self, name, dist.wrap(getattr(self, name), self.device))
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type) if amp == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """`loss.backward()`, scaled when training in fp16."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """`optimizer.step()`, unscaling and skipping inf/nan steps when training in fp16."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)

    def after_batch(self) -> None:
        """Called by the loop after each `train_batch`: in fp16, adjust the loss scale once per
        batch, after every optimizer has stepped (one update per optimizer would unscale the later
        optimizers' gradients with the wrong scale)."""
        if self.scaler is not None:
            self.scaler.update()

    # ----------------------------------------------------------------- checkpoint state
    def _unwrapped_keys(self, state: dict[str, Any]) -> dict[str, Any]:
        """Parameter names without DDP's `module.`, so checkpoints load with or without torchrun."""
        for name in self._ddp_wrapped:
            state = {k.replace(f"{name}.module.", f"{name}.", 1) if k.startswith(f"{name}.module.") else k: v
                     for k, v in state.items()}
        return state

    def _wrapped_keys(self, state: dict[str, Any]) -> dict[str, Any]:
        for name in self._ddp_wrapped:
            state = {f"{name}.module.{k[len(name) + 1:]}" if k.startswith(f"{name}.") else k: v for k, v in state.items()}
        return state

    def training_state(self) -> dict[str, Any]:
        """Weights plus optimizer, scheduler and grad-scaler state: what resuming needs."""
        return {
            "model": self._unwrapped_keys(self.state_dict()),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "schedulers": [sched.state_dict() for sched in self.schedulers],
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what `training_state` returned."""
        self.load_state_dict(self._wrapped_keys(state["model"]))
        for opt, opt_state in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        for sched, sched_state in zip(self.schedulers, state["schedulers"], strict=True):
            sched.load_state_dict(sched_state)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _batch_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == labels).float().mean()


class ClassificationModel(Model):
    """A network, an optimizer and a loss for (inputs, labels) batches; reports `loss` and `accuracy`.

    Args:
        net: the network, mapping inputs to logits.
        optimizer: an optimizer over `net.parameters()`.
        loss: the loss module, e.g. `nn.CrossEntropyLoss()`.
        scheduler: an optional LR scheduler, stepped once per epoch.

    Example:
        >>> net = nn.Linear(64, 10)
        >>> model = ClassificationModel(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss())
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def train_batch(self, batch: Any) -> Metrics:
        inputs, labels = batch
        with self.autocast():
            logits = self.net(inputs)
            loss = self.loss(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss)
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


def create_optimizer(config: dict[str, Any], params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer named by config `optimizer` (`adam` or `sgd`) with `lr` and `weight_decay`."""
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
    """The classifier that config keys `model`, `pretrained`, `dataset`, `optimizer`, `lr`,
    `weight_decay` describe; `input_shape`/`num_classes` given win over the dataset's (prediction
    builds the net from a checkpoint's without reading the data)."""
    from mlproj.data import dataset_shape
    from mlproj.nets import create_net

    if input_shape is None or num_classes is None:
        input_shape, num_classes = dataset_shape(config)
    net = create_net(config["model"], input_shape, num_classes, pretrained=config.get("pretrained"))
    return ClassificationModel(net, create_optimizer(config, net.parameters()), nn.CrossEntropyLoss())


def check_builtin_choices(config: dict[str, Any]) -> None:
    """`MLProjError` unless config `dataset` and `model` name a registered dataset and a built-in net."""
    from mlproj.data import dataset_spec
    from mlproj.nets import check_net_name

    if "dataset" in config:
        dataset_spec(config["dataset"])
    if "model" in config:
        check_net_name(config["model"])
