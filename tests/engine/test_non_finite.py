"""NaN and infinity: an error naming the input or the first layer that made them, never a
NaN picture (issue 11). The model is left as it was."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import deconvnet as dn
from deconvnet.errors import InputError
from tests import _nets


class _Branchy(nn.Module):
    """Not a chain: projections go through ``torch.func.vjp`` instead of the windowed path."""

    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.body = body
        self.side = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.side(x))  # type: ignore[no-any-return]


def _overflowing() -> nn.Sequential:
    """A small CaffeNet whose second convolution (module ``4``) overflows float32."""
    model = _nets.caffenet(width=4)
    with torch.no_grad():
        model[4].weight.fill_(1e38)  # any window summing to more than 3.4 overflows
    return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("call", ["project", "layer_output"])
def test_a_non_finite_input_is_named(bad: float, call: str) -> None:
    net = dn.Deconvnet(_nets.caffenet(width=4))
    x = torch.randn(2, 3, 67, 67)
    x[1, 2, 5, 7] = bad
    nan, infinite = (1, 0) if bad != bad else (0, 1)
    with pytest.raises(InputError, match=f"input holds {nan} NaN and {infinite} infinite"):
        if call == "project":
            net.project(x, "8", dn.TopMaps(2))
        else:
            net.layer_output(x, "8")


@pytest.mark.parametrize("wrap", [False, True], ids=["chain", "branchy"])
@pytest.mark.parametrize("select", [dn.TopMaps(2), dn.WholeMap(1)], ids=["top", "whole"])
def test_the_first_overflowing_layer_is_named(wrap: bool, select: dn.Selection) -> None:
    body = _overflowing()
    model: nn.Module = _Branchy(body) if wrap else body
    before = _state(model)
    prefix = "body." if wrap else ""
    net = dn.Deconvnet(model)
    x = torch.rand(1, 3, 67, 67, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InputError, match=f"layer '{prefix}4' gives non-finite values"):
        net.project(x, f"{prefix}8", select)
    with pytest.raises(InputError, match=f"layer '{prefix}4' gives non-finite"):
        net.layer_output(x, f"{prefix}12")
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    # Below the overflowing layer everything still works.
    assert torch.isfinite(net.project(x, f"{prefix}1", dn.TopMaps(2)).images).all()


def test_values_made_in_forward_itself_name_the_projected_layer() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x * 1e39)  # type: ignore[no-any-return]

    with pytest.raises(InputError, match="layer 'conv' gives non-finite"):
        dn.Deconvnet(Scaled()).project(torch.rand(1, 3, 9, 9), "conv", dn.TopMaps(1))


def test_a_reverse_pass_that_overflows() -> None:
    """Forward finite (tiny input, huge weights), reverse past float32: refused as well."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
    with torch.no_grad():
        for conv in (model[0], model[2]):
            conv.weight.copy_(torch.full_like(conv.weight, 1e20))
            conv.bias.zero_()
    x = torch.full((1, 3, 9, 9), 1e-30)
    original = copy.deepcopy(model)
    net = dn.Deconvnet(model)
    assert torch.isfinite(net.layer_output(x, "3")).all()
    with pytest.raises(InputError, match="reverse pass from layer '3' gave NaN or infinite"):
        net.project(x, "3", dn.TopMaps(1))
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), original.parameters(), strict=True)
    )
