"""Model, ClassificationModel and the original template's SimpleModel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlproj.nets import create_net
from mlproj.train.model import ClassificationModel, Model, SimpleModel, create_model


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 8, 8, generator=g)
    return x, (x.mean(dim=(1, 2, 3)) > 0).long()


def classifier() -> ClassificationModel:
    torch.manual_seed(0)
    net = create_net("mlp", (1, 8, 8), 2)
    return ClassificationModel(net, torch.optim.Adam(net.parameters(), lr=1e-2), nn.CrossEntropyLoss())


def test_classification_model_train_batch_lowers_loss_returns_tensors() -> None:
    model = classifier()
    first = model.train_batch(batch())
    for _ in range(20):
        last = model.train_batch(batch())
    assert set(first) == {"loss", "accuracy"}
    assert isinstance(first["loss"], torch.Tensor) and not first["loss"].requires_grad
    assert last["loss"] < first["loss"]


def test_training_state_roundtrip_restores_optimizer_and_scheduler() -> None:
    model = classifier()
    model.schedulers = [torch.optim.lr_scheduler.StepLR(model.optimizer, step_size=1, gamma=0.5)]
    model.train_batch(batch())
    model.on_epoch_end(0)
    state = model.training_state()
    other = classifier()
    other.schedulers = [torch.optim.lr_scheduler.StepLR(other.optimizer, step_size=1, gamma=0.5)]
    other.load_training_state(state)
    assert other.optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)
    assert torch.equal(other.optimizer.state_dict()["state"][0]["exp_avg"], model.optimizer.state_dict()["state"][0]["exp_avg"])
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), model.state_dict().values(), strict=True))


def test_simple_model_original_signature_trains() -> None:
    net = nn.Linear(64, 2)
    model = SimpleModel("linear", nn.Sequential(nn.Flatten(), net), torch.optim.SGD(net.parameters(), lr=0.1), nn.CrossEntropyLoss())
    assert model.name() == "linear"
    assert isinstance(model.model, nn.Sequential)
    assert set(model.train_batch(batch())) == {"loss", "accuracy"}


def test_model_bf16_autocast_trains_on_cpu() -> None:
    model = classifier()
    model.setup("cpu", amp="bf16")
    metrics = model.train_batch(batch())
    assert torch.isfinite(metrics["loss"])


@pytest.mark.parametrize("name", ["mlp", "lenet", "resnet18"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 60, 60)])
def test_nets_every_name_fits_every_dataset_shape(name: str, shape: tuple[int, int, int]) -> None:
    net = create_net(name, shape, 10)
    assert net(torch.zeros(2, *shape)).shape == (2, 10)


def test_create_model_uses_config_optimizer() -> None:
    model = create_model({"dataset": "digits", "model": "lenet", "optimizer": "sgd", "lr": 0.3, "weight_decay": 0.0})
    assert isinstance(model.optimizer, torch.optim.SGD)
    assert model.optimizer.param_groups[0]["lr"] == 0.3


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


def test_model_fp16_two_optimizers_both_unscaled_with_the_same_scale() -> None:
    model = TwoOptimizers()
    model.setup("cpu", amp="fp16")
    model.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)  # the scale changes every update
    model.train_batch(torch.ones(1, 1))
    model.after_batch()
    assert model.a.weight.item() == model.b.weight.item() == -1.0
    assert model.scaler.get_scale() == 2048.0  # one update for the batch, not one per optimizer
