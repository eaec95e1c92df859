"""The loop's machinery under the model's verbs: precision, clipping, accumulation and DDP (`Strategy`)."""

from __future__ import annotations

import pytest
import torch
from conftest import two_class_batch as batch
from torch import nn

from mlproj.train.model import ClassificationModel, Model
from mlproj.train.strategy import Strategy


class TwoOptimizers(Model):
    """Two parameters, each with its own optimizer, sharing one backward (as GANs do)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
        for layer in (self.a, self.b):
            nn.init.constant_(layer.weight, 0.0)
        self.optimizers = [torch.optim.SGD(self.a.parameters(), lr=1.0), torch.optim.SGD(self.b.parameters(), lr=1.0)]

    def train_batch(self, batch: torch.Tensor) -> dict:
        for optimizer in self.optimizers:
            optimizer.zero_grad()
        self.backward(self.a(batch).sum() + self.b(batch).sum())  # both gradients are 1
        for optimizer in self.optimizers:
            self.step(optimizer)
        return {}


def test_strategy_fp16_two_optimizers_both_unscaled_with_the_same_scale() -> None:
    model, strategy = TwoOptimizers(), Strategy("cpu", amp="fp16")
    strategy.setup(model)
    strategy.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)  # the scale changes every update
    model.train_batch(torch.ones(1, 1))
    strategy.after_step()
    assert model.a.weight.item() == model.b.weight.item() == -1.0
    assert strategy.scaler.get_scale() == 2048.0  # one update for the batch, not one per optimizer


def sgd_classifier() -> ClassificationModel:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 2))
    return ClassificationModel(net, torch.optim.SGD(net.parameters(), lr=0.5), nn.CrossEntropyLoss())


def accumulated(model: ClassificationModel, inputs: torch.Tensor, labels: torch.Tensor, n_batches: int) -> None:
    """One optimizer step over `inputs` split into `n_batches` micro-batches, as the loop drives them."""
    strategy = Strategy()
    strategy.setup(model)
    for i, (x, y) in enumerate(zip(inputs.chunk(n_batches), labels.chunk(n_batches), strict=True)):
        with strategy.micro_batch(model, n_batches, ends_group=i == n_batches - 1):
            model.train_batch((x, y))
    strategy.after_step()


@pytest.mark.parametrize("n_batches", [4, 2])  # a full group of 4, and a partial group (2 of 3) divided by 2
def test_strategy_accumulated_step_equals_one_step_on_the_whole_batch(n_batches: int) -> None:
    inputs, labels = batch()
    whole, split = sgd_classifier(), sgd_classifier()
    whole.train_batch((inputs, labels))
    accumulated(split, inputs, labels, n_batches)
    for (name, a), b in zip(whole.state_dict().items(), split.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), f"{name} differs"
    assert all(p.grad is None for p in split.parameters())  # zeroed after the step


def test_strategy_inside_a_group_does_not_step() -> None:
    model, strategy = sgd_classifier(), Strategy()
    strategy.setup(model)
    before = [p.detach().clone() for p in model.parameters()]
    with strategy.micro_batch(model, 3, ends_group=False):
        model.train_batch(batch())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is not None for p in model.parameters())  # kept for the group's next batch


def update_norm(model: ClassificationModel, amp: str = "off") -> float:
    strategy = Strategy("cpu", amp=amp, grad_clip_norm=0.01)
    strategy.setup(model)
    if amp == "fp16":
        strategy.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    model.train_batch(batch())
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    return float((after - before).norm() / model.optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("amp", ["off", "fp16"])  # fp16: clipped after unscaling, not the scaled gradients
def test_strategy_grad_clip_norm_bounds_the_update(amp: str) -> None:
    assert update_norm(sgd_classifier(), amp) == pytest.approx(0.01, rel=1e-2)


DDP_SCRIPT = """
import os, sys, torch
import torch.distributed as dist
from torch import nn
sys.path.insert(0, sys.argv[1])
from mlproj.train.model import ClassificationModel
from mlproj.train.strategy import Strategy
dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=0, world_size=1)
net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
model = ClassificationModel(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss())
strategy = Strategy()
strategy.setup(model, distributed=True)
reduces = []
def count(state, bucket):
    reduces.append(1)
    fut = torch.futures.Future()
    fut.set_result(bucket.buffer())
    return fut
model.net.register_comm_hook(None, count)
x, y = torch.randn(12, 1, 8, 8), torch.randint(0, 2, (12,))
for i in range(3):
    with strategy.micro_batch(model, 3, ends_group=i == 2):
        model.train_batch((x[4 * i:4 * i + 4], y[4 * i:4 * i + 4]))
print(len(reduces))
dist.destroy_process_group()
"""


def test_strategy_ddp_accumulation_all_reduces_once_per_optimizer_step(tmp_path) -> None:
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run([sys.executable, "-c", DDP_SCRIPT, str(ROOT), str(tmp_path / "store")],
                            capture_output=True, text=True, timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1"]  # one bucket reduced at the group's end, none inside it


DDP_STATE_SCRIPT = """
import sys, torch
import torch.distributed as dist
from torch import nn
sys.path.insert(0, sys.argv[1])
from mlproj.train.model import ClassificationModel
from mlproj.train.strategy import Strategy
dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=0, world_size=1)
def model():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2), nn.BatchNorm1d(2))
    return ClassificationModel(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss())
plain, wrapped = model(), model()
strategy = Strategy()
strategy.setup(wrapped, distributed=True)
state = strategy.training_state(wrapped)["model"]
expected = plain.state_dict()
print(list(state) == list(expected), dict(state._metadata) == dict(expected._metadata))
dist.destroy_process_group()
"""


def test_strategy_ddp_training_state_names_weights_and_module_versions_as_the_plain_model(tmp_path) -> None:
    """A checkpoint written under torchrun holds the plain network's names, `_metadata` included
    (BatchNorm's version there is what `load_state_dict` reads to upgrade old checkpoints)."""
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run([sys.executable, "-c", DDP_STATE_SCRIPT, str(ROOT), str(tmp_path / "store")],
                            capture_output=True, text=True, timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "True"]
