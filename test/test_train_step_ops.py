"""Host cost per step: a training step of the built-in loop dispatches a fixed handful of operators
more than a hand-written loop, whatever the batch size, and reads no value back on steps that do
not log. Counted on the CPU with a `TorchDispatchMode`: every operator dispatched is one the host
launches, and on a GPU each is time the device may wait."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_cifar
from torch.utils._python_dispatch import TorchDispatchMode

from mlproj import Callback
from mlproj.nets import create_net
from mlproj.train.loop import MLProject

MARK = "step end"


class OperatorLog(TorchDispatchMode):
    """The name of every operator dispatched, and a `MARK` where each step ends."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.names.append(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))

    def steps(self) -> list[list[str]]:
        """The operators between consecutive marks: one whole step each (the next batch's loading included)."""
        ends = [i for i, name in enumerate(self.names) if name == MARK]
        return [self.names[a + 1 : b] for a, b in zip(ends, ends[1:], strict=False)]


class MarkSteps(Callback):
    def __init__(self, log: OperatorLog) -> None:
        self.log = log

    def on_train_batch_end(self, project, metrics) -> None:  # noqa: ANN001
        self.log.names.append(MARK)


def builtin_step_operators(root: Path, batch_size: int) -> list[str]:
    config = {"dataset": "cifar10", "data_dir": str(root), "model": "lenet", "optimizer": "sgd", "lr": 0.01,
              "batch_size": batch_size, "val_fraction": 0.0, "n_global_iterations": 3, "device": "cpu",
              "log_iteration_scalars": 1000, "tensorboard_dir": None, "verify_checksums": False, "seed": 1}
    log = OperatorLog()
    project = MLProject(config, callbacks=[MarkSteps(log)])
    with log:
        project.train()
    return log.steps()[0]  # step 2 (loads batch 3): not the first, not a logging step


def hand_written_step_operators(root: Path, batch_size: int) -> list[str]:
    """What a user writes by hand: the split as one uint8 tensor, crop with padding and flip batched."""
    images = torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (1000,))
    net = create_net("lenet", (3, 32, 32), 10)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    mean = torch.tensor((0.49, 0.48, 0.45)).view(1, 3, 1, 1)
    std = torch.tensor((0.25, 0.24, 0.26)).view(1, 3, 1, 1)
    order = torch.randperm(1000)
    log = OperatorLog()
    with log:
        for step in range(3):
            index = order[step * batch_size : (step + 1) * batch_size]
            x, y = images.index_select(0, index), labels.index_select(0, index)
            n = x.shape[0]
            top, left = torch.randint(0, 9, (2, n, 1))
            flip = torch.rand(n, 1) < 0.5
            padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
            rows = top + torch.arange(32)
            cols = left + torch.where(flip, 31 - torch.arange(32), torch.arange(32))
            x = padded[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
            x = (x.float() / 255 - mean) / std
            loss = loss_fn(net(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            log.names.append(MARK)
    return log.steps()[0]


@pytest.mark.parametrize("batch_size", [64, 256])
def test_train_step_batch_64_and_256_dispatches_at_most_40_operators_more_than_a_hand_written_loop(
        tmp_path: Path, batch_size: int) -> None:
    make_cifar(tmp_path, n_per_batch=200)
    ours, theirs = builtin_step_operators(tmp_path, batch_size), hand_written_step_operators(tmp_path, batch_size)
    assert len(ours) <= len(theirs) + 40, (len(ours), len(theirs), sorted(set(ours) - set(theirs)))


def test_train_step_not_logging_reads_no_value_back(tmp_path: Path) -> None:
    make_cifar(tmp_path, n_per_batch=200)
    ours = builtin_step_operators(tmp_path, 64)
    assert "_local_scalar_dense" not in ours  # `.item()`, `.tolist()`, `float(tensor)`: a host sync on a GPU
