"""Blank projections explained (issue 23, item 4): which are blank, where the signal died,
which rule reaches the pixels; ``topunits`` on 1x1 maps.

Oracles: a two-layer net whose second convolution has only negative weights (the zeiler
signal below it is negative, so the ReLU under it passes nothing: it dies at the first
ReLU's output); and a literal deconvnet of SqueezeNet v1.0 written out here with
``conv_transpose2d`` and a scatter-add unpooling, block by block, no engine code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import deconvnet as dn
from deconvnet import models
from deconvnet.inputs import images
from deconvnet.instruments.signal import explain_blanks, is_blank

PHOTO = Path(images.PHOTO_DIR) / "chelsea.png"


def _dying_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.ReLU())
    with torch.no_grad():
        net[2].weight.copy_(-net[2].weight.abs())
        net[2].bias.fill_(5.0)  # the unit still fires
    return net.eval()


def test_a_signal_that_dies_at_the_first_relu_is_found_there() -> None:
    net = _dying_net()
    x = torch.rand(1, 3, 12, 12)
    with dn.Deconvnet(net) as deconvnet:
        result = deconvnet.project(x, "3", dn.TopMaps(2))
    assert bool((result.values > 0).all()) and not bool(result.images.any())
    report = explain_blanks(net, result)
    assert report is not None and report.blank == (0, 1)
    assert report.reached == {0: "1", 1: "1"}  # the ReLU's output holds the last signal
    assert report.reaching == {"guided": 0, "gradient": 2}
    assert report.sentence(2) == (
        "2 of 2 projections are blank: the zeiler signal from 3 is zero below 1; "
        "--rule gradient reaches the pixels"
    )
    for parameter in net.parameters():
        assert parameter.grad is None
    assert all(not m._forward_hooks for m in net.modules())


def test_visible_projections_and_display_resolution() -> None:
    assert is_blank(torch.zeros(3, 4, 4))
    assert not is_blank(torch.full((3, 4, 4), 1e-30))  # on its own scale it shows
    assert is_blank(torch.full((3, 4, 4), 1e-3), scale=1.0)  # < half a level of 127
    assert not is_blank(torch.full((3, 4, 4), 1e-2), scale=1.0)
    x = torch.rand(1, 3, 12, 12)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    with dn.Deconvnet(net) as deconvnet:
        assert explain_blanks(net, deconvnet.project(x, "1", dn.TopMaps(2))) is None


@pytest.fixture(scope="module")
def squeezenet() -> nn.Module:
    return models.load("squeezenet1_0", "deep-compression")


def _pool(x: Tensor) -> tuple[Tensor, Tensor]:
    return F.max_pool2d(x, 3, 2, ceil_mode=True, return_indices=True)


def _unpool(signal: Tensor, indices: Tensor, shape: torch.Size) -> Tensor:
    """The transpose of max pooling: each pooled value added back at its switch."""
    out = torch.zeros(shape[0], shape[1], shape[2] * shape[3], dtype=signal.dtype)
    out.scatter_add_(2, indices.flatten(2), signal.flatten(2))
    return out.view(shape)


def _literal_pool10_deconvnet(model: nn.Module, x: Tensor, unit: int) -> list[tuple[str, float]]:
    """The zeiler reverse pass from pool10's unit, written out; returns the largest |signal|
    at each fire block's output and at the input, top down."""
    f = model.features
    with torch.no_grad():
        trace: dict[str, Tensor] = {}
        h = F.relu(f[0](x))
        trace["pool1_in"] = h
        h, i1 = _pool(h)
        for index in (3, 4, 5):
            trace[f"in{index}"] = h
            h = f[index](h)
        trace["pool4_in"] = h
        h, i4 = _pool(h)
        for index in (7, 8, 9, 10):
            trace[f"in{index}"] = h
            h = f[index](h)
        trace["pool8_in"] = h
        h, i8 = _pool(h)
        trace["in12"] = h
        h = f[12](h)
        conv10 = model.classifier[1]
        z = F.relu(conv10(h))
        s = torch.zeros(1, 1000, 1, 1)
        s[0, unit] = z.mean(dim=(2, 3))[0, unit]
        s = s.expand_as(z) / (z.shape[2] * z.shape[3])  # average pooling's transpose
        s = F.conv_transpose2d(F.relu(s), conv10.weight, padding=conv10.padding)
        sizes = []

        def fire_down(index: int, signal: Tensor) -> Tensor:
            fire = f[index]
            half = fire.expand1x1.out_channels
            up1 = F.conv_transpose2d(F.relu(signal[:, :half]), fire.expand1x1.weight)
            up3 = F.conv_transpose2d(F.relu(signal[:, half:]), fire.expand3x3.weight, padding=1)
            return F.conv_transpose2d(F.relu(up1 + up3), fire.squeeze.weight)

        s = fire_down(12, s)
        sizes.append(("fire9", float(s.abs().max())))
        s = _unpool(s, i8, trace["pool8_in"].shape)
        for index, name in ((10, "fire8"), (9, "fire7"), (8, "fire6"), (7, "fire5")):
            s = fire_down(index, s)
            sizes.append((name, float(s.abs().max())))
        s = _unpool(s, i4, trace["pool4_in"].shape)
        for index, name in ((5, "fire4"), (4, "fire3"), (3, "fire2")):
            s = fire_down(index, s)
            sizes.append((name, float(s.abs().max())))
        s = _unpool(s, i1, trace["pool1_in"].shape)
        s = F.conv_transpose2d(F.relu(s), f[0].weight, stride=2)
        sizes.append(("input", float(s.abs().max())))
    return sizes


def test_squeezenet_pool10_blanks_die_where_a_literal_deconvnet_says(squeezenet) -> None:
    x = images.preprocess(images.load_image(PHOTO), squeezenet.preprocessing)
    with dn.Deconvnet(squeezenet) as net:
        result = net.project(x, "pool10", dn.TopMaps(5))
    report = explain_blanks(squeezenet, result)
    assert report is not None and report.blank
    assert report.reaching["guided"] == len(report.blank)
    for k in report.blank:
        sizes = dict(_literal_pool10_deconvnet(squeezenet, x, int(result.channels[0, k])))
        assert sizes["input"] == 0.0
        blocks = [name for name in sizes if name != "input"]
        # the signal reaches into the block where the trace last saw it, and nothing leaves
        # it downwards: zero at that block's input and below, non-zero above
        died = report.reached[k]
        assert died in blocks
        below = blocks[blocks.index(died) :]
        assert all(sizes[name] == 0.0 for name in below)
        above = blocks[: blocks.index(died)]
        assert all(sizes[name] > 0 for name in above)


def test_topunits_at_a_1x1_layer_is_units(squeezenet) -> None:
    x = images.preprocess(images.load_image(PHOTO), squeezenet.preprocessing)
    with dn.Deconvnet(squeezenet, "guided") as net:
        units = net.project(x, "pool10", dn.TopUnits(5))
        maps = net.project(x, "pool10", dn.TopMaps(5))
    assert torch.equal(units.channels, maps.channels)
    assert torch.equal(units.images, maps.images)
    assert units.positions is not None and units.positions.shape == (1, 5, 2)
    with dn.Deconvnet(squeezenet) as net, pytest.raises(dn.SelectionError, match="1x1 maps"):
        net.project(x, "fire9", dn.TopUnits(5))
