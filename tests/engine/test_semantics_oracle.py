"""The engine against an independent oracle (tests/_oracle.py: custom autograd Functions
patched over torch's functionals, plain autograd), in float64, on hand-built nets with every
new op family: every rule, MapMax / TopMaps / Neuron, early, middle and late layers, both
collision modes, ``activations="relu-like"``.

Tolerance: 1e-10 relative to the largest value of the projection (float64); the gradient
rule also against ``torch.autograd.grad`` of the unpatched model."""

from __future__ import annotations

import pytest
import torch

import deconvnet as dn
from tests import _modern, _oracle

TOL = 1e-10
SELECTIONS = (dn.MapMax(1), dn.TopMaps(2), dn.Neuron(2, 1, 2))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:  # for the gradient rule
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _check(net: str, depth: int, rule: str, collisions: str) -> None:
    build, layers = _modern.NETS[net]
    model, layer = build(), layers[depth]
    x = _modern.inputs()
    select = SELECTIONS[depth]
    with dn.Deconvnet(model, rule, collisions=collisions, activations="relu-like") as net_:
        result = net_.project(x, layer=layer, select=select)
    _oracle.assert_matches(result, model, x, layer, rule, collisions, TOL)


@pytest.mark.parametrize("collisions", ["sum", "overwrite"])
@pytest.mark.parametrize("rule", ["zeiler", "guided", "gradient"])
@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("net", sorted(_modern.NETS))
def test_projections_equal_the_oracle(net: str, depth: int, rule: str, collisions: str) -> None:
    _check(net, depth, rule, collisions)


@pytest.mark.parametrize("net", sorted(_modern.NETS))
def test_the_gradient_rule_is_autograd_under_either_policy(net: str) -> None:
    build, layers = _modern.NETS[net]
    model, x = build(), _modern.inputs()
    for activations in ("strict", "relu-like"):
        with dn.Deconvnet(model, "gradient", activations=activations) as net_:
            result = net_.project(x, layer=layers[2], select=dn.MapMax(0))
        primal = x.clone().requires_grad_(True)
        found: dict[str, torch.Tensor] = {}

        def keep(
            module: torch.nn.Module, inputs: object, output: torch.Tensor, found: dict = found
        ) -> None:
            found["y"] = output

        handle = model.get_submodule(layers[2]).register_forward_hook(keep)
        model(primal)
        handle.remove()
        y = found["y"]
        seed = torch.zeros_like(y)
        for b in range(y.shape[0]):
            row, col = (int(p) for p in result.positions[b, 0])
            seed[b, 0, row, col] = y[b, 0, row, col].detach()
        (expected,) = torch.autograd.grad(y, primal, seed)
        assert _relative(result.images[:, 0], expected) <= TOL


@pytest.mark.parametrize("net", sorted(_modern.NETS))
def test_strict_refuses_them_naming_the_module_and_the_flag(net: str) -> None:
    build, layers = _modern.NETS[net]
    model = build()
    with (
        dn.Deconvnet(model, "zeiler") as net_,
        pytest.raises(dn.UnsupportedLayerError, match=r"in module .*--activations relu-like"),
    ):
        net_.project(_modern.inputs(), layer=layers[2], select=dn.MapMax(0))
