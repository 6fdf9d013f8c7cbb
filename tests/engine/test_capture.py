"""The one capture loop: layers' outputs, the forward pass stopped once they are known, one
way to read tuple outputs and one way to report a failing model; no hook left behind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deconvnet.engine.capture import ForwardFailed, forward_through, forward_until
from deconvnet.errors import LayerNotFoundError, LayerNotReachedError


class _Counting(nn.Module):
    """Conv, a module returning a tuple, an in-place ReLU, a module called twice, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.pair = _Pair()
        self.relu = nn.ReLU(inplace=True)
        self.twice = nn.Identity()
        self.head = nn.Conv2d(2, 1, 1)
        self.runs: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.runs.append("start")
        y = self.relu(self.pair(self.conv(x))[0])
        y = self.twice(self.twice(y) * 2)
        self.runs.append("head")
        return self.head(y)  # type: ignore[no-any-return]


class _Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        return x - 1, 7


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_the_pass_stops_at_the_last_layer_asked_for_and_outputs_are_copies() -> None:
    model = _Counting()
    x = torch.randn(1, 1, 6, 6)
    found = forward_until(model, x, {"pair": model.pair, "conv": model.conv})
    assert model.runs == ["start"]  # the head never ran
    assert list(found) == ["conv", "pair"]  # in the order reached
    expected = model.conv(x) - 1  # the tuple's first tensor, before the in-place ReLU
    assert torch.equal(found["pair"], expected.detach())
    assert _hooks(model) == 0


def test_the_kth_call_and_the_whole_pass() -> None:
    model = _Counting()
    x = torch.randn(1, 1, 6, 6)
    first = forward_until(model, x, [("twice", model.twice)])["twice"]
    second = forward_until(model, x, [("twice", model.twice)], call=2)["twice"]
    assert torch.equal(second, first * 2)
    last, output = forward_through(model, x, {"twice": model.twice})
    assert torch.equal(last["twice"], second) and output.shape == (1, 1, 4, 4)
    assert _hooks(model) == 0


def test_until_stops_at_one_layer_and_keeps_the_others_that_ran() -> None:
    model = _Counting()
    named = [(name, module) for name, module in model.named_modules() if name]
    found = forward_until(model, torch.randn(1, 1, 6, 6), named, keep=lambda n, o: n, until="relu")
    assert list(found) == ["conv", "pair", "relu"]


def test_a_failing_model_is_one_line_and_leaves_no_hook() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(5, 5))
    with pytest.raises(
        ForwardFailed, match=r"forward pass failed on input of shape \(1, 1, 6, 6\)"
    ) as caught:
        forward_until(model, torch.randn(1, 1, 6, 6), {"1": model[1]})
    assert "\n" not in str(caught.value) and caught.value.reason
    assert _hooks(model) == 0


def test_errors_raised_while_keeping_pass_through_unchanged() -> None:
    model = _Counting()

    def refuse(name: str, output: object) -> None:
        raise LayerNotFoundError(f"{name} refused")

    with pytest.raises(LayerNotFoundError, match="conv refused"):
        forward_until(model, torch.randn(1, 1, 6, 6), {"conv": model.conv}, keep=refuse)
    assert _hooks(model) == 0


def test_a_layer_that_never_runs_is_named() -> None:
    model = _Counting()
    unused = nn.Conv2d(1, 1, 1)
    model.add_module("unused", unused)
    with pytest.raises(LayerNotReachedError, match="'unused' was not reached"):
        forward_until(model, torch.randn(1, 1, 6, 6), {"unused": unused})
    assert _hooks(model) == 0
