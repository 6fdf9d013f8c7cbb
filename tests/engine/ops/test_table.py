"""The op table: every spelling belongs to one entry, each entry's parsed call reads the
arguments the way torch does, and the three parts of the engine find ops only there."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deconvnet as dn
from deconvnet.engine import ops
from deconvnet.engine.ops import convolution, normalisation, pooling, rectifiers
from deconvnet.engine.ops.op import Op, TorchCall
from deconvnet.engine.receptive import receptive_fields


def _parse(func: Any, *args: Any, **kwargs: Any) -> Any:
    return ops.OPS[func].parse(TorchCall(func, args, kwargs))


def test_every_spelling_has_one_entry_and_every_entry_is_in_the_table() -> None:
    counted = sum(len(family.functions) for family in ops.FAMILIES)
    assert counted == len(ops.OPS)  # no spelling in two families
    assert set(ops.OPS.values()) == set(ops.FAMILIES)
    for spelling in (F.relu, torch.relu_, torch.Tensor.relu_, torch.ops.aten.relu.default):
        assert isinstance(ops.OPS[spelling], rectifiers.ReLU)
    assert ops.module_op(nn.CrossMapLRN2d(3)) is not None
    assert ops.module_op(nn.ReLU()) is None


def test_convolution_reads_same_and_valid_padding_like_torch() -> None:
    x, weight = torch.randn(1, 2, 9, 9), torch.randn(4, 2, 3, 5)
    same = _parse(F.conv2d, x, weight, None, 1, "same", (2, 1))
    assert same.padding == (2, 2) and same.dilation == (2, 1)
    assert F.conv2d(x, weight, padding="same", dilation=(2, 1)).shape[-2:] == x.shape[-2:]
    valid = _parse(torch.conv2d, x, weight, padding="valid", stride=2)
    assert (valid.padding, valid.stride, valid.window.kernel) == ((0, 0), (2, 2), (3, 5))


def test_lrn_defaults_are_torchs() -> None:
    call = _parse(F.local_response_norm, torch.randn(1, 4, 3, 3), 3)
    assert (call.size, call.alpha, call.beta, call.k) == (3, 1e-4, 0.75, 1.0)
    import inspect

    defaults = inspect.signature(F.local_response_norm).parameters
    assert (call.alpha, call.beta, call.k) == tuple(
        defaults[k].default for k in ["alpha", "beta", "k"]
    )


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "window"),
    [
        (F.max_pool2d, (3,), {}, ((3, 3), (3, 3), (0, 0), (1, 1))),
        (
            torch.max_pool2d,
            ([3, 3], [], [1, 1], [1, 1], True),
            {},
            ((3, 3), (3, 3), (1, 1), (1, 1)),
        ),
        (F.max_pool2d, (2,), {"stride": 1, "dilation": 2}, ((2, 2), (1, 1), (0, 0), (2, 2))),
    ],
)
def test_max_pool_spellings_read_alike(
    func: Any, args: tuple[Any, ...], kwargs: Any, window: Any
) -> None:
    call = _parse(func, torch.randn(1, 1, 8, 8), *args, **kwargs)
    found = call.window
    assert (found.kernel, found.stride, found.padding, found.dilation) == window


def test_hardtanh_is_relu6_only_between_0_and_6() -> None:
    x = torch.randn(1, 2, 3, 3)
    assert _parse(F.hardtanh, x, 0.0, 6.0).defined
    assert not _parse(F.hardtanh, x).defined  # -1..1: no rule
    assert _parse(F.relu6, x, inplace=True).inplace
    assert not _parse(F.threshold, x, 0.5, 0.0).defined


class _Doubled(Op[Any]):
    """A test-only entry: ``torch.mul`` as a layer with a 3x3 window of stride 2."""

    functions = frozenset({torch.mul})

    def parse(self, raw: TorchCall) -> Any:
        return raw.input

    def geometry(self, call: Any, x: torch.Tensor, out: torch.Tensor) -> Any:
        from deconvnet.engine.ops.op import Sliding

        return Sliding((3, 3), (2, 2), (1, 1))


def test_the_field_tracer_asks_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry's geometry is what the tracer uses: swapping the table's entry for a
    spelling changes the traced field (the tracer has no list of its own)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.out = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.mul(x, 2))  # type: ignore[no-any-return]

    model = Net()
    plain = receptive_fields(model, (1, 1, 8, 8))["out"]
    monkeypatch.setitem(ops.OPS, torch.mul, _Doubled())
    traced = receptive_fields(model, (1, 1, 8, 8))["out"]
    assert (plain.size, plain.stride) == ((1, 1), (1, 1))
    assert (traced.size, traced.stride) == ((3, 3), (2, 2))


def test_module_families_are_named_in_the_docs() -> None:
    for module in (convolution, normalisation, pooling, rectifiers):
        assert module.__doc__ and module.FAMILIES
    assert dn.Deconvnet  # the package still imports with the table
