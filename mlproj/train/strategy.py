"""`Strategy`: how the loop runs a `Model`: its device, precision, DDP wrapping and gradient accumulation.

The loop builds one from the config and sets the model up with it (`setup`); the model's verbs
`autocast()`, `backward(loss)` and `step(optimizer)` delegate here, so the user's `train_batch` holds
no machinery and runs unchanged in fp32, bf16 or fp16, with or without torchrun or accumulation.

Accumulation: the loop runs each `train_batch` inside `micro_batch(model, group_size, ends_group)`;
`backward` divides the loss by the group's size while `step` steps (and zeroes the gradients) only
at the group's end, so `accumulate_grad_batches` needs no code in `train_batch`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from mlproj.train import distributed as dist
from mlproj.train.checkpoint import fit_keys, rename_keys

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Strategy:
    """Device, precision (`amp`: `off`, `bf16` or `fp16`), DDP and accumulation for one model.

    Args:
        device: where the model and its batches go.
        amp: the autocast precision of forward passes; fp16 also scales the loss.
        compile: `torch.compile` each network (each child module with parameters), in place,
            so parameter names and checkpoints stay those of the plain network.
        channels_last: store 4-D weights (and feed images) channels-last.
        grad_clip_norm: clip each optimizer's gradients to this total norm before it steps.

    `Strategy()` is fp32 on the CPU without accumulation: what a model's verbs do outside a project.
    """

    def __init__(self, device: str | torch.device = "cpu", amp: str = "off", *, compile: bool = False,
                 channels_last: bool = False, grad_clip_norm: float | None = None):
        self.device = torch.device(device)
        self.amp_dtype = AMP_DTYPES[amp]
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type) if amp == "fp16" else None
        self.compile, self.grad_clip_norm = compile, grad_clip_norm
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.wrapped: list[str] = []  # the model's children wrapped in DistributedDataParallel
        self.group = (1, True)  # (size, ends here) of the gradient-accumulation group of this batch

    def setup(self, model: Any, *, distributed: bool = False) -> None:
        """Move `model` to the device and memory format, compile its networks, make its verbs use
        this strategy, and with `distributed` wrap its networks in DDP now (see `distribute`)."""
        model.to(self.device)
        if self.memory_format is torch.channels_last:
            model.to(memory_format=torch.channels_last)
        # Static shapes: each batch shape (full and last batch, training and evaluation) gets its own
        # graph, compiled once in the first epoch; the default would recompile a dynamic-shape graph at
        # the first other shape and run every later batch through its slower kernels.
        for name in _networks(model) if self.compile else ():
            getattr(model, name).compile(dynamic=False)
        model._strategy = self
        if distributed:
            self.distribute(model)

    def distribute(self, model: Any) -> None:
        """Wrap each network of `model` in `DistributedDataParallel` (under torchrun; the process
        group must be joined). Done once: a second call changes nothing."""
        for name in _networks(model) if not self.wrapped else ():
            self.wrapped.append(name)
            setattr(model, name, dist.wrap(getattr(model, name), self.device))

    # ------------------------------------------------------------------ what the model's verbs do
    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """`loss.backward()`, scaled in fp16, divided by the size of the batch's accumulation group."""
        size = self.group[0]
        loss = loss / size if size > 1 else loss
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """At the end of an accumulation group: clip, `optimizer.step()` (fp16: unscaled, inf/nan
        steps skipped), then zero the gradients. A no-op inside a group."""
        if not self.group[1]:
            return
        if self.grad_clip_norm is not None:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
        optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ what the loop does around a batch
    @contextlib.contextmanager
    def micro_batch(self, model: Any, group_size: int = 1, ends_group: bool = True) -> Iterator[None]:
        """The context of one `train_batch` in a group of `group_size` batches whose gradients add up
        to one optimizer step; `ends_group` on the group's last batch.

        Inside a group, DDP-wrapped networks skip their gradient all-reduce (`no_sync`): the
        group's last backward reduces the sum once.
        """
        self.group = (group_size, ends_group)
        try:
            with contextlib.ExitStack() as stack:
                for name in self.wrapped if not ends_group else ():
                    stack.enter_context(getattr(model, name).no_sync())
                yield
        finally:
            self.group = (1, True)

    def after_step(self) -> None:
        """After a group's optimizers have stepped: in fp16, adjust the loss scale once (one update
        per optimizer would unscale the later optimizers' gradients with the wrong scale)."""
        if self.scaler is not None:
            self.scaler.update()

    # ------------------------------------------------------------------ checkpoint state
    def training_state(self, model: Any) -> dict[str, Any]:
        """`model`'s weights (named as the plain networks name them, so checkpoints load with or
        without torchrun) plus optimizer, scheduler and grad-scaler state: what resuming needs."""
        return {
            "model": self._plain_names(model.state_dict()),
            "optimizers": [opt.state_dict() for opt in model.optimizers],
            "schedulers": [sched.state_dict() for sched in model.schedulers],
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def _plain_names(self, weights: dict[str, Any]) -> dict[str, Any]:
        """`weights` with each DDP-wrapped network's `module` level dropped (`net.module.0.weight` ->
        `net.0.weight`), in `_metadata`'s module versions too."""
        prefixes = {f"{name}.module": name for name in self.wrapped}

        def plain(key: str) -> str:
            for prefix, name in prefixes.items():
                if key == prefix or key.startswith(prefix + "."):
                    return name + key[len(prefix):]
            return key

        return rename_keys(weights, plain)

    def load_training_state(self, model: Any, state: dict[str, Any]) -> None:
        """Restore what `training_state` returned into `model` (weights renamed by `fit_keys`)."""
        model.load_state_dict(fit_keys(state["model"], model.state_dict()))
        for opt, opt_state in zip(model.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        for sched, sched_state in zip(model.schedulers, state["schedulers"], strict=True):
            sched.load_state_dict(sched_state)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _networks(model: nn.Module) -> list[str]:
    """The children that hold parameters: each is compiled and wrapped on its own."""
    return [name for name, child in model.named_children() if any(True for _ in child.parameters())]
