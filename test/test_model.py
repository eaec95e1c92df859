"""Model, ClassificationModel and the original template's SimpleModel."""

from __future__ import annotations

import pytest
import torch
from conftest import two_class_batch as batch
from torch import nn

from mlproj.nets import create_net
from mlproj.train.model import ClassificationModel, Model, SimpleModel, create_model
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


def test_model_setup_bf16_as_before_strategy_trains_on_cpu() -> None:
    model = classifier()
    model.setup("cpu", amp="bf16")  # a notebook's call, from before the loop's machinery moved to Strategy
    assert model.amp_dtype is torch.bfloat16 and model.device == torch.device("cpu")
    assert model.train_batch(batch())["loss"].isfinite()


class ScaledByHand(Model):
    """A GAN-style `train_batch` that scales its loss itself through `self.scaler`."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(1, 1, bias=False)
        nn.init.constant_(self.a.weight, 0.0)
        self.optimizers = [torch.optim.SGD(self.a.parameters(), lr=1.0)]

    def train_batch(self, batch: torch.Tensor) -> dict:
        loss = self.a(batch).sum()  # its gradient is 1
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        self.scaled_grad = self.a.weight.grad.item()
        self.step(self.optimizers[0])
        return {}


@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_model_scaler_is_the_strategys_so_hand_scaled_losses_are_unscaled(amp: str) -> None:
    model = ScaledByHand()
    model.setup("cpu", amp=amp)
    with model.micro_batch():
        model.train_batch(torch.ones(1, 1))
        model.after_batch()
    assert model.scaler is model._strategy.scaler and (model.scaler is None) == (amp == "off")
    assert model.scaled_grad == (1.0 if amp == "off" else model._strategy.scaler.get_scale() * 1.0)
    assert model.a.weight.item() == -1.0  # the step unscaled what train_batch scaled


def test_model_setup_options_read_back_from_the_model() -> None:
    model = classifier()
    model.setup("cpu", channels_last=True, grad_clip_norm=0.5)
    assert model.memory_format is torch.channels_last and model.grad_clip_norm == 0.5
    assert classifier().memory_format is torch.contiguous_format and classifier().grad_clip_norm is None


def test_model_micro_batch_and_after_batch_accumulate_as_the_loop_does() -> None:
    inputs, labels = batch()
    whole, split = classifier(), classifier()
    for model in (whole, split):
        model.optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    whole.train_batch((inputs, labels))
    for i, (x, y) in enumerate(zip(inputs.chunk(2), labels.chunk(2), strict=True)):
        with split.micro_batch(2, ends_group=i == 1):
            split.train_batch((x, y))
            split.after_batch()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole.parameters(), split.parameters(), strict=True))


def test_model_set_run_length_and_after_batch_drive_its_lr_schedule() -> None:
    from mlproj.train.schedules import LRSchedule

    model = classifier()
    model.schedulers = [LRSchedule(model.optimizer, "cosine")]
    model.set_run_length(4, 2)
    lrs = []
    for _ in range(4):
        with model.micro_batch():
            model.train_batch(batch())
            model.after_batch()
        lrs.append(model.optimizer.param_groups[0]["lr"])
    assert lrs[0] < 1e-2 and lrs[-1] == pytest.approx(0.0, abs=1e-9)


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
