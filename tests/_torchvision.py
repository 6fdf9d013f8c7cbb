"""ResNet-18/50, VGG16-BN and DenseNet-121 with torchvision's module names and state-dict keys.

Written out here (torchvision does not import beside this torch) for the engine's tests and
benchmark: random seeded weights, and BatchNorm statistics calibrated by a few train-mode
forward passes on random images before ``eval()``. ``width`` divides every channel count
so tests stay fast; ``width=1`` is the real architecture.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(cin, planes, 3, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(cin, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)  # type: ignore[no-any-return]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(cin, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, planes * 4, 1)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes * 4, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)  # type: ignore[no-any-return]


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock | Bottleneck], counts: list[int], width: int) -> None:
        super().__init__()
        base = 64 // width
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = base
        for index, count in enumerate(counts):
            planes = base * 2**index
            blocks = []
            for i in range(count):
                blocks.append(block(cin, planes, 2 if i == 0 and index > 0 else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, 1000)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))  # type: ignore[no-any-return]


def resnet18(width: int = 1) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], width)


def resnet50(width: int = 1) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], width)


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, width: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                cout = int(item) // width
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(True)]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        hidden = 4096 // width
        self.classifier = nn.Sequential(
            nn.Linear(cin * 49, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(), nn.Linear(hidden, 1000),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))  # type: ignore[no-any-return]


def vgg16_bn(width: int = 1) -> VGG:
    return VGG(width)


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[Tensor]) -> Tensor:
        out = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        return self.conv2(self.relu2(self.norm2(out)))  # type: ignore[no-any-return]


class _DenseBlock(nn.ModuleDict):
    def __init__(self, count: int, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        for i in range(count):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(cin + i * growth, growth, bn_size))

    def forward(self, init: Tensor) -> Tensor:
        features = [init]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    def __init__(self, width: int = 1, blocks: tuple[int, ...] = (6, 12, 24, 16)) -> None:
        super().__init__()
        growth, features = 32 // width, 64 // width
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, features, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(features))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        for i, count in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(count, features, growth, 4))
            features += count * growth
            if i != len(blocks) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(features, features // 2))
                features //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(features))
        self.classifier = nn.Linear(features, 1000)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.features(x))
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)  # type: ignore[no-any-return]


def densenet121(width: int = 1) -> DenseNet:
    return DenseNet(width)


def calibrated(model: nn.Module, size: int = 224, seed: int = 0, passes: int = 3) -> nn.Module:
    """He-initialised weights from ``seed``, BatchNorm statistics from a few train-mode
    passes on random images (momentum ``None``: their running average), then ``eval()``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(
                    torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5
                )
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                module.momentum = None
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
        model.train()
        for _ in range(passes):
            model(torch.randn(2, 3, size, size, generator=generator))
    return model.eval()


def no_inplace(model: nn.Module) -> nn.Module:
    """Captum's backward hooks refuse in-place ReLUs: the benchmark turns them off for both."""
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model
