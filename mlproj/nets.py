"""The networks config `model` names: the examples `mlp`, `lenet`, `resnet18`, and any torchvision
classification architecture as `torchvision.<builder>` (`mlproj models` lists them).

Each takes the input shape (C, H, W) and the number of classes, so one name works on every dataset
(digits' 8x8, MNIST's 28x28, CIFAR's 32x32, ClutteredMNIST's 60x60). `pretrained=` loads a local
state_dict into any of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mlproj.errors import MLProjError

TORCHVISION_PREFIX = "torchvision."


class MLP(nn.Module):
    """Two hidden layers with ReLU."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, hidden: int = 256):
        super().__init__()
        c, h, w = input_shape
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LeNet5(nn.Module):
    """LeNet-5 (conv 6, conv 16, fc 120, fc 84). Inputs under 20 pixels (8x8 digits) keep their
    resolution: the second convolution is padded and only one pooling step is taken."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c, h, w = input_shape
        small = min(h, w) < 20
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2),
            nn.ReLU(),
            nn.Identity() if small else nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2 if small else 0),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_features = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.classifier = nn.Sequential(
            nn.Linear(n_features, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (3x3 stem, no max-pool), as in the usual CIFAR recipes."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c = input_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(c, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes)]
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


NETS: dict[str, Callable[[tuple[int, int, int], int], nn.Module]] = {
    "mlp": MLP,
    "lenet": LeNet5,
    "resnet18": ResNet18,
}


def create_net(name: str, input_shape: tuple[int, int, int], num_classes: int, pretrained: str | None = None) -> nn.Module:
    """Build the network `name` for inputs of `input_shape` and `num_classes` outputs.

    Args:
        name: `mlp`, `lenet`, `resnet18`, or `torchvision.<builder>` (randomly initialized).
        pretrained: the path of a local state_dict (or mlproj checkpoint) to start from; tensors
            whose shape differs (the head for another class count) keep their random init.

    Raises:
        MLProjError: for an unknown name or an unreadable `pretrained` file.
    """
    check_net_name(name)
    if name.startswith(TORCHVISION_PREFIX):
        net = torchvision_net(name.removeprefix(TORCHVISION_PREFIX), tuple(input_shape), num_classes)
    else:
        net = NETS[name](tuple(input_shape), num_classes)
    if pretrained:
        load_pretrained(net, str(pretrained))
    return net


def net_names() -> list[str]:
    """Every name config `model` takes: the examples, then `torchvision.<builder>` for each of
    torchvision's classification builders."""
    import torchvision.models  # lazy: seconds of import, only for torchvision names

    builders = torchvision.models.list_models(module=torchvision.models)
    return sorted(NETS) + [TORCHVISION_PREFIX + b for b in builders]


def check_net_name(name: Any) -> None:
    """`MLProjError` unless `name` is one `net_names()` lists (torchvision imported only for its names)."""
    if isinstance(name, str) and name.startswith(TORCHVISION_PREFIX):
        if name not in net_names():
            raise MLProjError(f"config model={name!r} is not a torchvision classification builder: `mlproj models` lists them.")
    elif name not in NETS:
        raise MLProjError(
            f"config model={name!r} is invalid: expected one of {', '.join(sorted(NETS))}, or "
            "torchvision.<builder> (`mlproj models` lists them); for a network of your own, override get_model "
            "in your MLProject subclass. Run with model=<value> to fix it."
        )


def torchvision_net(builder: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """torchvision's `builder` with `num_classes` outputs, random weights, its first convolution
    taking `input_shape[0]` channels."""
    import torchvision.models  # lazy: seconds of import, only for torchvision names (as in net_names)

    options: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if builder in ("googlenet", "inception_v3"):
        options["aux_logits"] = False  # the auxiliary heads return a tuple, which no loss takes
        options["init_weights"] = True
    if builder.startswith("vit_"):
        options["image_size"] = input_shape[1]  # ViT fixes its input size (a multiple of the patch size)
    try:
        net = torchvision.models.get_model(builder, **options)
    except (ValueError, AssertionError, RuntimeError) as err:
        raise MLProjError(f"torchvision.{builder} cannot be built for inputs {input_shape} ({err}): "
                          "choose another image_size or model.") from None
    if input_shape[0] != 3:
        _adapt_first_conv(net, input_shape[0])
    return net


def _adapt_first_conv(net: nn.Module, channels: int) -> None:
    """Replace the first Conv2d (the stem; every torchvision classifier has one) by one of `channels` inputs."""
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, attribute = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            replacement = nn.Conv2d(
                channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                module.dilation, 1, module.bias is not None, module.padding_mode,
            )
            setattr(parent, attribute, replacement)
            return


def load_pretrained(net: nn.Module, path: str) -> None:
    """Load the state_dict at `path` into `net` with the safe loader, keeping `net`'s own tensors
    where the file's have another shape: a head for another class count, or an RGB stem for a
    1-channel net (there its weights are summed over the colour channels)."""
    if not os.path.isfile(path):
        raise MLProjError(f"config pretrained={path!r} does not exist: pass the path of a local state_dict (.pt/.pth).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the safe loader refusing, a truncated file, not a torch file
        raise MLProjError(f"config pretrained={path!r} cannot be read by the safe loader (weights_only=True): "
                          f"{type(err).__name__}. Pass a state_dict saved with torch.save(net.state_dict(), path).") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # an mlproj checkpoint: its net's weights
        state = {k.removeprefix("net."): v for k, v in state["model"].items() if k.startswith("net.")}
    own = net.state_dict()
    loaded = {}
    for key, value in state.items() if isinstance(state, dict) else ():
        if key not in own or not isinstance(value, torch.Tensor):
            continue
        if value.shape != own[key].shape and value.dim() == 4 and own[key].shape[1] == 1 and value.shape[1] == 3:
            value = value.sum(dim=1, keepdim=True)  # an RGB stem for grey inputs
        if value.shape == own[key].shape:
            loaded[key] = value
    if not loaded:
        raise MLProjError(f"config pretrained={path!r} holds no weights of this network: pass a state_dict of the same architecture.")
    net.load_state_dict({**own, **loaded})
    kept = sorted(set(own) - set(loaded))
    if kept:
        print(f"pretrained: loaded {len(loaded)} tensors from {path}; {len(kept)} keep their random init "
              f"(not in the file or another shape): {', '.join(kept[:4])}{' ...' if len(kept) > 4 else ''}", flush=True)
