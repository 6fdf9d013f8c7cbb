"""The windowed fast path equals the general autograd path (itself checked against the paper)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deconvnet as dn
from deconvnet.engine import windowed
from deconvnet.engine.policies import ReversePolicy
from tests import _nets


def both_paths(monkeypatch, model, x, layer, select, **options):
    with dn.Deconvnet(model, **options) as net:
        fast = net.project(x, layer, select)
        monkeypatch.setattr(windowed, "plan", lambda *args, **kwargs: None)
        general = net.project(x, layer, select)
        monkeypatch.undo()
    return fast, general


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"rule": "guided"},
        {"rule": "gradient"},
        {"lrn": "reapply"},
        {"lrn": "gradient", "rule": "guided"},
        {"collisions": "overwrite"},
        {"rule": "none", "lrn": "reapply", "collisions": "overwrite"},
    ],
)
@pytest.mark.parametrize("layer", ["4", "13", "14"])
def test_caffenet_fast_path_equals_general(monkeypatch, options, layer):
    model = _nets.caffenet(width=8).double()
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x * 60  # LRN far from identity
    assert windowed.plan(model, x, model.get_submodule(layer), ReversePolicy(**options)) is not None
    fast, general = both_paths(monkeypatch, model, x, layer, dn.TopMaps(5), **options)
    assert torch.equal(fast.channels, general.channels)
    scale = general.images.abs().max()
    assert scale > 0
    assert float((fast.images - general.images).abs().max() / scale) <= 1e-10


@pytest.mark.parametrize("position", [(0, 0), (12, 12), (0, 12), (6, 0)])
def test_border_units_on_zfnet(monkeypatch, position):
    model = _nets.zfnet(width=8).double()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    fast, general = both_paths(monkeypatch, model, x, "12", dn.Neuron(3, *position), rule="guided")
    assert float((fast.images - general.images).abs().max()) <= 1e-10 * max(
        1.0, float(general.images.abs().max())
    )


def test_vgg_with_batchnorm_and_dropout(monkeypatch):
    model = (
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Dropout(),
            nn.Conv2d(8, 8, 3, padding=2, dilation=2),
            nn.ReLU(),
        )
        .double()
        .eval()
    )
    model[1].running_var.fill_(2.0)
    model[1].weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 20, 20, dtype=torch.float64)
    fast, general = both_paths(monkeypatch, model, x, "6", dn.TopMaps(4))
    assert float((fast.images - general.images).abs().max()) <= 1e-10


def test_graphs_and_other_selections_use_the_general_path():
    policy = ReversePolicy()
    res = _nets.resnet_like()
    assert windowed.plan(res, torch.randn(1, 3, 16, 16), res[4], policy) is None
    x = torch.randn(1, 3, 32, 32)
    for form in ("functional", "inplace_method", "functional_inplace"):
        twin = _nets.FunctionalTwin(_nets.vgg_like(), form)  # ReLUs outside modules
        assert windowed.plan(twin, x, twin.base[9], policy) is None, form
    vgg = _nets.vgg_like()
    assert windowed.plan(vgg.train(), x, vgg[9], policy) is not None  # no BN/dropout before 9


@pytest.mark.parametrize(
    "norm", [nn.BatchNorm2d(8, affine=False), nn.BatchNorm2d(8, track_running_stats=False)]
)
def test_batchnorm_variants(monkeypatch, norm):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), norm, nn.ReLU(), nn.Conv2d(8, 4, 3)).double().eval()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    covered = windowed.plan(model, x, model[3], ReversePolicy()) is not None
    assert covered == (norm.running_var is not None)  # batch statistics: general path
    fast, general = both_paths(monkeypatch, model, x, "3", dn.TopMaps(2))
    assert float((fast.images - general.images).abs().max()) <= 1e-10


@pytest.mark.parametrize("size", [4, 5])
def test_lrn_gradient_window_even_and_odd_sizes(monkeypatch, size):
    model = (
        nn.Sequential(
            nn.Conv2d(3, 7, 3),
            nn.ReLU(),
            nn.LocalResponseNorm(size, alpha=0.5, beta=0.75, k=2.0),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(7, 6, 3),
        )
        .double()
        .eval()
    )
    x = torch.randn(2, 3, 21, 21, dtype=torch.float64) * 3
    fast, general = both_paths(monkeypatch, model, x, "4", dn.TopMaps(3), lrn="gradient")
    reference = both_paths(monkeypatch, model, x, "4", dn.TopMaps(3), lrn="skip")[1]
    assert float((fast.images - general.images).abs().max()) <= 1e-10
    assert not torch.allclose(general.images, reference.images)  # the LRN matters here
