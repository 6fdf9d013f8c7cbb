"""Real timm and torchvision CNNs (random weights) against the independent oracle of
tests/_oracle.py, in float64: every rule, ``activations="relu-like"``, MapMax / TopMaps /
Neuron at early, middle and late convolutions, both collision modes where the model has
overlapping max pooling. Runs in the second virtualenv (``pytest -m zoo``).

Tolerance: 1e-10 of the projection's largest value."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import deconvnet as dn
from tests import _oracle

pytestmark = pytest.mark.zoo
TOL = 1e-10
SIZE = 48


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        timm = pytest.importorskip("timm")
        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False)

    return build


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        models = pytest.importorskip("torchvision.models")
        torch.manual_seed(0)
        return models.get_model(name, weights=None)

    return build


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[str, ...]]] = {
    "timm:efficientnet_b0": (_timm("efficientnet_b0"), ("sum",)),  # SiLU, sigmoid SE
    "timm:mobilenetv3_small_050": (_timm("mobilenetv3_small_050"), ("sum",)),  # hard-swish/-sigmoid
    "timm:convnext_atto": (_timm("convnext_atto"), ("sum",)),  # LayerNorm2d, GELU, LayerScale
    "timm:resnest14d": (_timm("resnest14d"), ("sum", "overwrite")),  # softmax split attention
    "timm:regnety_002": (_timm("regnety_002"), ("sum",)),  # sigmoid SE, ReLU
    "torchvision:mobilenet_v3_small": (_torchvision("mobilenet_v3_small"), ("sum",)),
    "torchvision:regnet_y_400mf": (_torchvision("regnet_y_400mf"), ("sum",)),
    "torchvision:resnet18": (_torchvision("resnet18"), ("sum", "overwrite")),
}
SELECTIONS = {"early": dn.MapMax(0), "middle": dn.TopMaps(2), "late": dn.Neuron(1, 0, 0)}


def _maps(model: nn.Module, x: Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Convolutions in call order whose output is a map (H, W > 1), with their shapes."""
    found: list[tuple[str, tuple[int, ...]]] = []
    handles = [
        module.register_forward_hook(
            lambda m, i, o, name=name: (
                found.append((name, tuple(o.shape))) if o.shape[-2:].numel() > 1 else None
            )
        )
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return found


@pytest.fixture(scope="module", params=sorted(MODELS))
def zoo_model(request: pytest.FixtureRequest) -> tuple[str, nn.Module, Tensor, dict[str, str]]:
    build, _ = MODELS[request.param]
    model = build().double().eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, SIZE, SIZE, generator=generator, dtype=torch.float64)
    maps = _maps(model, x)
    names = [name for name, _ in maps]
    layers = {"early": names[len(names) // 10], "middle": names[len(names) // 2], "late": names[-1]}
    return request.param, model, x, layers


@pytest.mark.parametrize("rule", ["zeiler", "guided", "gradient"])
@pytest.mark.parametrize("depth", ["early", "middle", "late"])
def test_zoo_projections_equal_the_oracle(zoo_model, depth: str, rule: str) -> None:
    name, model, x, layers = zoo_model
    layer = layers[depth]
    for collisions in MODELS[name][1]:
        select = SELECTIONS[depth]
        with dn.Deconvnet(model, rule, collisions=collisions, activations="relu-like") as net:
            result = net.project(x, layer=layer, select=select)
        _oracle.assert_matches(result, model, x, layer, rule, collisions, TOL)
