"""Padding in the windowed reverse pass: ``nn.ZeroPad2d``, ``nn.ConstantPad2d`` and
``F.pad`` (constant mode; negative amounts crop) move the signal's window by the padding.

Oracles: the general autograd path (windowed = general ≤ 1e-10 in float64, under every rule
and both collision modes), and a convolution's own zero padding: ``ZeroPad2d(p)`` then an
unpadded convolution is the same network as the convolution with ``padding=p``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deconvnet as dn
from tests.engine.test_windowed import OPTIONS, TOL, _graphs, _x, assert_equal_paths


class _Padded(nn.Module):
    """Every spelling of constant padding between convolutions and a max-pool, as timm's
    TF-"same" layers write it (a pad of -inf before pooling)."""

    def __init__(self) -> None:
        super().__init__()
        self.zero = nn.ZeroPad2d((1, 2, 0, 3))
        self.conv1 = nn.Conv2d(3, 6, 3)
        self.const = nn.ConstantPad2d(2, -0.5)
        self.conv2 = nn.Conv2d(6, 5, 3, stride=2)
        self.head = nn.Conv2d(5, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(self.zero(x)))
        y = F.max_pool2d(F.pad(y, (0, 1, 1, 0), value=float("-inf")), 3, 2)
        y = F.relu(self.conv2(self.const(y)))
        return self.head(F.pad(y, (-1, 0, 0, -1)))  # type: ignore[no-any-return]


def _seeded(model: nn.Module, seed: int = 5) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model.double().eval()


@pytest.mark.parametrize("options", OPTIONS)
def test_padding_spellings_equal_the_general_path(monkeypatch, options):
    model = _seeded(_Padded())
    assert_equal_paths(monkeypatch, model, _x((2, 3, 23, 26)), "head", **options)


@pytest.mark.parametrize("position", [(0, 0), (1, 3), (2, 1)])
def test_a_unit_at_the_border_reads_zero_from_the_padding(monkeypatch, position):
    """Units whose field lies partly in the padding: the padded part gets no signal."""
    model = _seeded(_Padded(), seed=8)
    x = _x((1, 3, 23, 26), seed=4)
    assert_equal_paths(monkeypatch, model, x, "head", dn.Neuron(1, *position), rule="guided")


def test_zero_padding_is_a_convolutions_own_padding(monkeypatch):
    """ZeroPad2d(2) → Conv2d(padding=0) and Conv2d(padding=2) with the same weights project
    alike, unit for unit (the second through the convolution's own padding)."""
    padded = _seeded(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.ZeroPad2d(2), nn.Conv2d(4, 5, 5))
    )
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 5, padding=2)).double()
    plain.load_state_dict({k.replace("3.", "2."): v for k, v in padded.state_dict().items()})
    plain.eval()
    x = _x((2, 3, 15, 17), seed=6)
    seen = _graphs(monkeypatch)
    with dn.Deconvnet(padded) as net:
        found = net.project(x, "3", dn.TopMaps(5))
    assert seen and seen[-1] is not None, "the windowed path was not used"
    monkeypatch.undo()
    expected = dn.Deconvnet(plain).project(x, "2", dn.TopMaps(5))
    assert torch.equal(found.channels, expected.channels)
    scale = float(expected.images.abs().max())
    assert float((found.images - expected.images).abs().max()) <= TOL * scale


def test_other_padding_modes_keep_the_general_path(monkeypatch):
    """Reflection and replication copy pixels: no windowed rule, the general path."""
    model = _seeded(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReflectionPad2d(1), nn.Conv2d(4, 2, 3)))
    seen = _graphs(monkeypatch)
    dn.Deconvnet(model).project(_x((1, 3, 12, 12)), "2", dn.TopMaps(2))
    assert seen == [None]
