"""Small seeded networks built the way today's CNNs are: SiLU/GELU/Hardswish blocks,
squeeze-excitation and its kin (ECA, CBAM, selective kernels), LayerNorm2d, GroupNorm,
InstanceNorm, RMSNorm, LayerScale, the ELU family, leaky rectifiers. Written as timm and
torchvision write them (modules calling the functionals, ``x * gate``), float64."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests._nets import _init, _random_batchnorm


class SqueezeExcite(nn.Module):
    """timm's SEModule: pooled, reduced, activated, expanded, then ``x * gate``."""

    def __init__(self, channels: int, act: nn.Module, gate: nn.Module) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, max(2, channels // 4), 1)
        self.act = act
        self.expand = nn.Conv2d(max(2, channels // 4), channels, 1)
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        s = self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(s)


class ECA(nn.Module):
    """Efficient channel attention: a 1-D conv over pooled channels, ``expand_as``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))
        y = torch.sigmoid(y).view(x.shape[0], -1, 1, 1)
        return x * y.expand_as(x)


class SpatialGate(nn.Module):
    """CBAM's spatial attention: channel mean and max, a 7×7 conv, a (B, 1, H, W) gate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class SelectiveKernel(nn.Module):
    """SK attention: two branches mixed by a softmax over branches."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.near = nn.Conv2d(channels, channels, 3, padding=1)
        self.far = nn.Conv2d(channels, channels, 3, padding=2, dilation=2)
        self.select = nn.Linear(channels, 2 * channels)

    def forward(self, x: Tensor) -> Tensor:
        near, far = F.relu(self.near(x)), F.relu(self.far(x))
        weights = self.select((near + far).mean((2, 3)))
        weights = torch.softmax(weights.view(x.shape[0], 2, -1), dim=1)
        return near * weights[:, 0, :, None, None] + far * weights[:, 1].view(*x.shape[:2], 1, 1)


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: LayerNorm over channels of an NCHW map."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class RmsNorm2d(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7×7, LayerNorm2d, 1×1 expand, GELU, 1×1, LayerScale, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = LayerNorm2d(channels)
        self.up = nn.Conv2d(channels, 4 * channels, 1)
        self.act = nn.GELU()
        self.down = nn.Conv2d(4 * channels, channels, 1)
        self.gamma = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x: Tensor) -> Tensor:
        y = self.down(self.act(self.up(self.norm(self.dw(x)))))
        return x + y.mul(self.gamma.reshape(1, -1, 1, 1))


class InvertedResidual(nn.Module):
    """MobileNet/EfficientNet block: 1×1 expand, depthwise 3×3, SE, 1×1 project, residual."""

    def __init__(self, channels: int, act: type[nn.Module], gate: nn.Module) -> None:
        super().__init__()
        wide = 2 * channels
        self.expand = nn.Sequential(nn.Conv2d(channels, wide, 1), nn.BatchNorm2d(wide), act())
        self.dw = nn.Sequential(
            nn.Conv2d(wide, wide, 3, padding=1, groups=wide), nn.BatchNorm2d(wide), act()
        )
        self.se = SqueezeExcite(wide, act(), gate)
        self.project = nn.Sequential(nn.Conv2d(wide, channels, 1), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.project(self.se(self.dw(self.expand(x))))


def mobile(seed: int = 11) -> nn.Sequential:
    """EfficientNet/MobileNetV3-like: Hardswish stem, SiLU + sigmoid-SE block, 3×3/2 max-pool,
    ReLU6 + hard-sigmoid-SE block, GELU, ECA."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 0
        nn.BatchNorm2d(8),
        nn.Hardswish(),  # 2: early
        InvertedResidual(8, nn.SiLU, nn.Sigmoid()),
        nn.MaxPool2d(3, 2, padding=1),
        InvertedResidual(8, nn.ReLU6, nn.Hardsigmoid()),  # 5: middle
        nn.Conv2d(8, 12, 3, padding=1),
        nn.GELU(),
        ECA(),
        nn.Conv2d(12, 12, 3, padding=1),  # 9: late
    )
    _random_batchnorm(_init(model, seed), seed)
    return model.double().eval()


def convnext(seed: int = 12) -> nn.Sequential:
    """ConvNeXt-like: patchify stem, LayerNorm2d, ConvNeXt block (GELU, LayerScale),
    GroupNorm, InstanceNorm, Mish, RMSNorm, tanh-GELU, CBAM spatial gate, max-pool."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 2, stride=2),  # 0
        LayerNorm2d(8),  # 1: early
        ConvNeXtBlock(8),  # 2
        nn.GroupNorm(2, 8),
        nn.Conv2d(8, 12, 2, stride=2),  # 4: middle
        nn.InstanceNorm2d(12, affine=True),
        nn.Mish(),
        RmsNorm2d(12),
        nn.Conv2d(12, 12, 3, padding=1),
        nn.GELU(approximate="tanh"),
        SpatialGate(),
        nn.MaxPool2d(3, 2, padding=1),
        nn.Conv2d(12, 12, 3, padding=1),  # 12: late
    )
    for module in model.modules():
        if isinstance(module, nn.GroupNorm | nn.InstanceNorm2d | nn.LayerNorm):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return _init(model, seed).double().eval()  # type: ignore[return-value]


def exponential(seed: int = 13) -> nn.Sequential:
    """ELU, CELU, SELU, Softplus, selective-kernel softmax attention, LeakyReLU and RReLU."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ELU(),  # 1: early
        nn.Conv2d(8, 8, 3, padding=1),
        nn.CELU(0.7),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(8, 8, 3, padding=1),  # 5: middle
        nn.SELU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Softplus(beta=2.0),
        SelectiveKernel(8),
        nn.LeakyReLU(0.1),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.RReLU(0.1, 0.3),
        nn.Conv2d(8, 8, 3, padding=1),  # 13: late
    )
    return _init(model, seed).double().eval()  # type: ignore[return-value]


NETS = {"mobile": (mobile, ("2", "5", "9")), "convnext": (convnext, ("1", "4", "12")),
        "exponential": (exponential, ("1", "5", "13"))}  # fmt: skip
"""Each net's builder and its early, middle and late layers."""


def inputs(size: int = 24, batch: int = 2, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator, dtype=torch.float64)
