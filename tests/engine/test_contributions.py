"""Deconvnet.contributions against literal oracles: torch.autograd.grad to the upstream
layer's output, and the identity the definition promises — for the gradient rule on a
bias-free chain the contributions add up to the unit's activation."""

from __future__ import annotations

import copy
from functools import cache

import pytest
import torch
from torch import nn

from deconvnet import Deconvnet, MapMax, TopMaps, models
from deconvnet.engine import graph as graph_module
from deconvnet.errors import InputError

IDENTITY_RTOL = 1e-5
"""Float32 sums of a few thousand products: the identity holds to this relative error."""


@cache
def _default() -> nn.Module:
    return models.load("default").eval()


def _bias_free(model: nn.Module) -> nn.Module:
    free = copy.deepcopy(model)
    with torch.no_grad():
        for module in free.modules():
            if isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.zero_()
    return free


def _inputs(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def literal(model: nn.Module, x: torch.Tensor, layer: str, upstream: str, units) -> torch.Tensor:
    """Σ over the map of upstream output × d unit / d upstream output, by autograd."""
    modules = dict(model.named_modules())
    kept: dict[str, torch.Tensor] = {}

    def keeper(name: str):
        def hook(module, inputs, output):
            kept[name] = output
            return output + 0 if name == upstream else None  # never edited in place after

        return hook

    handles = [modules[n].register_forward_hook(keeper(n)) for n in (upstream, layer)]
    try:
        model(x.clone().requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for b, c, y, x_pos in units:
        (signal,) = torch.autograd.grad(
            kept[layer][b, c, y, x_pos], kept[upstream], retain_graph=True
        )
        rows.append((signal[b] * kept[upstream][b]).sum(dim=(1, 2)))
    return torch.stack(rows).detach()


def test_gradient_contributions_equal_autograd_and_the_general_path(monkeypatch) -> None:
    model = _default()
    x = _inputs(0, (2, 3, 32, 32))
    with Deconvnet(model, "gradient") as net:
        windowed = net.contributions(x, "conv4", "relu2", TopMaps(3))
    units = [
        (b, int(windowed.channels[b, k]), *map(int, windowed.positions[b, k]))
        for b in range(2)
        for k in range(3)
    ]
    expected = literal(model, x, "features.10", "features.5", units)
    assert windowed.contributions.reshape(6, -1) == pytest.approx(expected, abs=1e-5, rel=1e-4)
    # the same from the general path (a graph the windowed pass cannot follow)
    monkeypatch.setattr(graph_module.Recorder, "graph", lambda self: None)
    with Deconvnet(model, "gradient") as net:
        general = net.contributions(x, "conv4", "relu2", TopMaps(3))
    assert torch.allclose(general.contributions, windowed.contributions, atol=1e-5, rtol=1e-4)


def test_zeiler_windowed_equals_general_path(monkeypatch) -> None:
    model = _default()
    x = _inputs(1, (2, 3, 32, 32))
    with Deconvnet(model, "zeiler") as net:
        windowed = net.contributions(x, "conv4", "pool1", TopMaps(2))
    monkeypatch.setattr(graph_module.Recorder, "graph", lambda self: None)
    with Deconvnet(model, "zeiler") as net:
        general = net.contributions(x, "conv4", "pool1", TopMaps(2))
    assert torch.allclose(general.contributions, windowed.contributions, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("name", "layer", "upstream", "shape"),
    [
        ("default", "conv4", "relu3", (2, 3, 32, 32)),  # one convolution
        ("default", "conv4", "pool1", (2, 3, 32, 32)),  # conv, ReLU, max pool (LRN: below)
        ("squeezenet1_0", "fire5", "fire4", (1, 3, 99, 99)),  # max pool, Fire: cat of branches
        ("squeezenet1_0", "fire3", "conv1", (1, 3, 99, 99)),
    ],
)
def test_gradient_contributions_sum_to_the_activation_on_a_bias_free_chain(
    name: str, layer: str, upstream: str, shape: tuple[int, ...]
) -> None:
    model = _default() if name == "default" else models.load(name, weights="deep-compression")
    free = _bias_free(model.eval())
    if name == "default":  # LRN is not homogeneous: take it out of the chain
        free.features[3] = nn.Identity()
        free.features[7] = nn.Identity()
    with Deconvnet(free, "gradient") as net:
        found = net.contributions(_inputs(2, shape), layer, upstream, TopMaps(4))
    total = found.contributions.sum(dim=-1)
    assert torch.allclose(total, found.values, rtol=IDENTITY_RTOL, atol=1e-5), (total, found.values)
    assert bool((found.values > 0).all())


def test_the_rest_of_one_convolution_is_its_bias() -> None:
    model = _default()
    with Deconvnet(model, "gradient") as net:
        found = net.contributions(_inputs(3, (2, 3, 32, 32)), "conv4", "relu3", TopMaps(5))
    bias = model.features[10].bias.detach()[found.channels]
    assert torch.allclose(found.rest, bias, atol=1e-4)


def test_upstream_must_run_below_and_the_model_is_untouched() -> None:
    model = _default()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with Deconvnet(model) as net, pytest.raises(InputError, match="does not run before"):
        net.contributions(_inputs(4, (1, 3, 32, 32)), "conv2", "conv4", MapMax(0))
    with Deconvnet(model) as net:
        net.contributions(_inputs(4, (1, 3, 32, 32)), "conv4", "conv2", MapMax(0))
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
