"""Small seeded networks shared by the tests (random weights, real layouts, built answers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _init(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            with torch.no_grad():
                module.weight.copy_(
                    torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5
                )
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    return model.eval()


def caffenet(width: int = 1, seed: int = 0, fc: bool = False) -> nn.Sequential:
    """CaffeNet conv1–pool5: grouped convs, pool before LRN, 3×3/2 ceil-mode pools.

    ``width`` divides the channel counts so tests stay fast.
    """
    c = [96 // width, 256 // width, 384 // width, 384 // width, 256 // width]
    layers: list[nn.Module] = [
        nn.Conv2d(3, c[0], 11, stride=4),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.LocalResponseNorm(5, 1e-4, 0.75),
        nn.Conv2d(c[0], c[1], 5, padding=2, groups=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.LocalResponseNorm(5, 1e-4, 0.75),
        nn.Conv2d(c[1], c[2], 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c[2], c[3], 3, padding=1, groups=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(c[3], c[4], 3, padding=1, groups=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True),
    ]
    if fc:
        layers += [nn.Flatten(), nn.Linear(c[4] * 36, 64), nn.ReLU(), nn.Linear(64, 10)]
    return _init(nn.Sequential(*layers), seed)  # type: ignore[return-value]


def zfnet(width: int = 1, seed: int = 1) -> nn.Sequential:
    """ZFNet (paper Fig. 3) conv1–pool5: 7×7/2 conv1, 3×3/2 pools with LRN, 5×5/2 conv2."""
    c = [96 // width, 256 // width, 384 // width, 384 // width, 256 // width]
    return _init(  # type: ignore[return-value]
        nn.Sequential(
            nn.Conv2d(3, c[0], 7, stride=2, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, padding=1),
            nn.LocalResponseNorm(5, 1e-4, 0.75),
            nn.Conv2d(c[0], c[1], 5, stride=2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, padding=1),
            nn.LocalResponseNorm(5, 1e-4, 0.75),
            nn.Conv2d(c[1], c[2], 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c[2], c[3], 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c[3], c[4], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
        ),
        seed,
    )


def vgg_like(seed: int = 2) -> nn.Sequential:
    """VGG-style: 3×3 convs, 2×2 pools, fc head (no LRN: Captum's rules apply exactly)."""
    return _init(  # type: ignore[return-value]
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 8 * 8, 32),
            nn.ReLU(),
            nn.Linear(32, 10),
        ),
        seed,
    )


class Fire(nn.Module):
    """SqueezeNet fire module: squeeze 1×1, expand 1×1 and 3×3, concatenated."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [
                self.expand1x1_activation(self.expand1x1(x)),
                self.expand3x3_activation(self.expand3x3(x)),
            ],
            1,
        )


def squeeze_like(seed: int = 3) -> nn.Sequential:
    return _init(  # type: ignore[return-value]
        nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(16, 4, 8),
            Fire(16, 4, 8),
        ),
        seed,
    )


class BasicBlock(nn.Module):
    """ResNet basic block with identity shortcut; ReLU module reused twice, as torchvision."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


def resnet_like(seed: int = 4) -> nn.Sequential:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), BasicBlock(8), BasicBlock(8)
    )
    generator = torch.Generator().manual_seed(seed + 100)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(8, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(8, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(8, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(8, generator=generator) * 0.1)
    return _init(model, seed)  # type: ignore[return-value]


class FunctionalTwin(nn.Module):
    """The same computation as ``vgg_like`` with ReLUs written in another form."""

    def __init__(self, base: nn.Sequential, form: str) -> None:
        super().__init__()
        self.base = base
        self.form = form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.base:
            if isinstance(module, nn.ReLU):
                if self.form == "functional":
                    x = F.relu(x)
                elif self.form == "torch":
                    x = torch.relu(x)
                elif self.form == "method":
                    x = x.relu()
                elif self.form == "inplace_method":
                    x.relu_()
                elif self.form == "functional_inplace":
                    x = F.relu(x, inplace=True)
            else:
                x = module(x)
        return x


class ReusedReLU(nn.Module):
    """``vgg_like`` with every ReLU replaced by one shared module."""

    def __init__(self, base: nn.Sequential) -> None:
        super().__init__()
        self.base = base
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.base:
            x = self.act(x) if isinstance(module, nn.ReLU) else module(x)
        return x


def small_conv() -> nn.Sequential:
    """conv-ReLU-pool-conv-ReLU on 3 channels (the rule-comparison net)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 5, 3, padding=1),
        nn.ReLU(),
    ).eval()


def small_classifier() -> nn.Sequential:
    """A conv net with a linear head on 16x16 inputs (the sanity-check net)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 4),
    ).eval()


def quadrant_classifier() -> nn.Sequential:
    """Class q = the quadrant whose mean is lowest: occluding quadrant q (fill 0) picks q."""
    conv = nn.Conv2d(1, 1, 1)
    linear = nn.Linear(4, 4)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        linear.weight.copy_(-100 * torch.eye(4))
        linear.bias.zero_()
    return nn.Sequential(conv, nn.AvgPool2d(16), nn.Flatten(), linear).eval()


def tie_net() -> nn.Sequential:
    """Integer weights, no bias: exact arithmetic, many exact ties."""
    generator = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 5, 3, padding=1, bias=False),
        nn.ReLU(),
    )
    with torch.no_grad():
        for index in (0, 3):
            weight = net[index].weight
            weight.copy_(torch.randint(-1, 2, weight.shape, generator=generator).float())
    return net.eval()


def float_net(seed: int = 1) -> nn.Sequential:
    generator = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
    )
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return net.eval()


class TorchvisionBlock(nn.Module):
    """torchvision's ``BasicBlock`` as written there: ``out += identity`` in place, one
    ``relu`` module called twice, an optional 1×1 downsample with BatchNorm."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TorchvisionResNet(nn.Module):
    """A small ``torchvision.models.resnet18`` layout (stem, layer1, layer2, avgpool, fc),
    left in train mode as torchvision builds it."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(TorchvisionBlock(width, width), TorchvisionBlock(width, width))
        self.layer2 = nn.Sequential(
            TorchvisionBlock(width, 2 * width, 2), TorchvisionBlock(2 * width, 2 * width)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def torchvision_resnet(seed: int = 6) -> TorchvisionResNet:
    """Seeded :class:`TorchvisionResNet` in train mode, with non-trivial BatchNorm stats."""
    torch.manual_seed(seed)
    model = TorchvisionResNet()
    _random_batchnorm(model, seed)
    return model.train()


def vgg_bn(seed: int = 7) -> nn.Module:
    """A small ``torchvision.models.vgg16_bn`` layout (conv-BN-ReLU(inplace) blocks, max
    pools, a Dropout classifier), left in train mode as torchvision builds it."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 3
    for width in (8, 8, "M", 16, 16, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            assert isinstance(width, int)
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width)]
            layers.append(nn.ReLU(inplace=True))
            channels = width
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(*layers))
    model.add_module("avgpool", nn.AdaptiveAvgPool2d(2))
    model.add_module("flatten", nn.Flatten())
    model.add_module(
        "classifier",
        nn.Sequential(nn.Linear(channels * 4, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 10)),
    )
    _random_batchnorm(model, seed)
    return model.train()


def _random_batchnorm(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed + 100)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)


def lrn_net(seed: int = 8) -> nn.Sequential:
    """conv-ReLU-LRN-pool-conv: the plain gradient must go through the LRN exactly."""
    return _init(  # type: ignore[return-value]
        nn.Sequential(
            nn.Conv2d(3, 12, 3, padding=1),
            nn.ReLU(),
            nn.LocalResponseNorm(5, 1e-2, 0.75, 2.0),
            nn.MaxPool2d(2),
            nn.Conv2d(12, 8, 3),
        ),
        seed,
    )


def cancelling(delta: float = 2**-6, seed: int = 5) -> nn.Sequential:
    """Two 5×5 filters that nearly cancel on the way down — ``w`` and ``−(1+δ)·w`` — added
    by a 1×1 convolution: a unit's projection is ``−δ·w``, the difference of two terms
    ``1/δ`` times larger than itself, which bfloat16's 8 significant bits cannot hold."""
    generator = torch.Generator().manual_seed(seed)
    first = nn.Conv2d(3, 2, 5, bias=False)
    second = nn.Conv2d(2, 1, 1, bias=False)
    weight = torch.randn((3, 5, 5), generator=generator)
    with torch.no_grad():
        first.weight[0] = weight
        first.weight[1] = -(1 + delta) * weight
        second.weight.fill_(1.0)
    return nn.Sequential(first, nn.ReLU(), second, nn.ReLU()).eval()
