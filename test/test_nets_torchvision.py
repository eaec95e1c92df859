"""model=torchvision.<builder>: any torchvision classifier, sized for the dataset, pretrained from a local file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import run_main
from torch import nn

from mlproj.cli import main as mlproj_main
from mlproj.errors import MLProjError
from mlproj.nets import create_net
from mlproj.train.loop import MLProject


def test_create_net_torchvision_one_channel_input_replaces_the_stem() -> None:
    net = create_net("torchvision.resnet18", (1, 16, 16), 3)
    assert net.conv1.in_channels == 1 and net.fc.out_features == 3
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 3)


def test_project_torchvision_mobilenet_trains_one_step_on_digits(tmp_path: Path) -> None:
    project = MLProject({"dataset": "digits", "model": "torchvision.mobilenet_v3_small", "device": "cpu", "seed": 0,
                         "n_global_iterations": 1, "val_fraction": 0.0, "tensorboard_dir": None,
                         "model_dir": str(tmp_path)})
    project.train()
    assert project.global_step == 1
    assert project.predict(torch.zeros(1, 1, 8, 8)).shape == (1, 10)  # in eval mode: BatchNorm takes one sample


def test_create_net_pretrained_loads_the_body_and_keeps_a_new_head(tmp_path: Path) -> None:
    source = create_net("torchvision.resnet18", (3, 32, 32), 10)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    net = create_net("torchvision.resnet18", (3, 32, 32), 3, pretrained=str(tmp_path / "resnet18.pth"))
    assert torch.equal(net.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert net.fc.out_features == 3 and not torch.equal(net.fc.weight, source.fc.weight[:3])


def test_create_net_pretrained_rgb_stem_is_summed_for_one_channel(tmp_path: Path) -> None:
    source = create_net("torchvision.resnet18", (3, 32, 32), 10)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    net = create_net("torchvision.resnet18", (1, 32, 32), 10, pretrained=str(tmp_path / "resnet18.pth"))
    assert torch.equal(net.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))


class NotAWeight:
    pass


def test_create_net_pretrained_pickled_object_is_refused_by_the_safe_loader(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": NotAWeight()}, path)  # unpickling it would build (run) our class
    with pytest.raises(MLProjError, match=r"cannot be read by the safe loader \(weights_only=True\)"):
        create_net("torchvision.resnet18", (3, 32, 32), 10, pretrained=str(path))


def test_create_net_pretrained_of_another_architecture_raises(tmp_path: Path) -> None:
    torch.save(nn.Linear(3, 3).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(MLProjError, match="holds no weights of this network"):
        create_net("torchvision.resnet18", (3, 32, 32), 10, pretrained=str(tmp_path / "linear.pt"))


def test_mlproj_models_lists_builtin_and_torchvision_names(capsys: pytest.CaptureFixture) -> None:
    assert mlproj_main(["models"]) == 0
    names = capsys.readouterr().out.split()
    assert names[:3] == ["lenet", "mlp", "resnet18"]
    assert {"torchvision.resnet50", "torchvision.mobilenet_v3_small", "torchvision.efficientnet_b0",
            "torchvision.vit_b_16"} <= set(names)
    assert "torchvision.fasterrcnn_resnet50_fpn" not in names  # detection, not classification


def test_main_unknown_torchvision_builder_is_one_line_naming_mlproj_models(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = run_main("with", "dataset=digits", "model=torchvision.resnet5", runs=runs)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: config model='torchvision.resnet5' is not a torchvision classification builder: `mlproj models` lists them.")
    assert not runs.exists()
