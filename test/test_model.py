"""Model, ClassificationModel and the original template's SimpleModel."""

from __future__ import annotations

import pytest
import torch
from conftest import two_class_batch as batch
from torch import nn

from mlproj.nets import create_net
from mlproj.train.model import ClassificationModel, SimpleModel, create_model
from mlproj.train.strategy import Strategy


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
    model.schedulers[0].step()  # as the loop steps it at an epoch's end
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
    Strategy("cpu", amp="bf16").setup(model)
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


def test_classification_model_from_config_own_model_name_accepted_bad_smoothing_refused() -> None:
    from mlproj.errors import MLProjError

    # The user's own network and model name: from_config reads only the optimizer, loss and schedule keys.
    model = ClassificationModel.from_config(nn.Linear(4, 2), {"model": "tiny_cnn", "optimizer": "sgd", "lr": 0.1,
                                                               "label_smoothing": 0.1})
    assert isinstance(model.optimizer, torch.optim.SGD) and model.loss.label_smoothing == 0.1
    with pytest.raises(MLProjError, match="label_smoothing=1.5 is invalid"):
        ClassificationModel.from_config(nn.Linear(4, 2), {"model": "tiny_cnn", "label_smoothing": 1.5})
