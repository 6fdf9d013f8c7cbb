"""The argument helpers every entry of the op table shares: sizes as pairs, padding and
stride conventions, adaptive pooling's kernel, the tensors in a call, spellings by name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.engine.ops.op import IMAGE_RANK, Pair, TorchFunction

ATEN = torch.ops.aten
"""ATen ops appear directly in the graphs of ``torch.export`` archives (``.pt2``)."""


def pair(value: Any, default: int = 0) -> Pair:
    """``k``, ``(k,)``, ``(kh, kw)`` or a longer tuple ending in H, W, as ``(h, w)``;
    None or ``[]`` is ``default``."""
    if value is None or (isinstance(value, list | tuple) and len(value) == 0):
        return default, default
    if isinstance(value, list | tuple):
        return (
            (int(value[-1]), int(value[-1]))
            if len(value) == 1
            else (int(value[-2]), int(value[-1]))
        )
    return int(value), int(value)


def pool_stride(value: Any, kernel: Pair) -> Pair:
    """Pooling's stride; None (or torch's ``[]``) means the kernel."""
    if value is None or (isinstance(value, list | tuple) and not value):
        return kernel
    return pair(value)


def conv_padding(value: Any, kernel: Pair, dilation: Pair) -> Pair:
    """Convolution padding: ``"valid"`` is none, ``"same"`` pads ``d(k-1)//2`` before (as
    PyTorch does), else numbers."""
    if value == "valid":
        return (0, 0)
    if value == "same":
        return (dilation[0] * (kernel[0] - 1) // 2, dilation[1] * (kernel[1] - 1) // 2)
    return pair(value)


def tensors(value: Any) -> Iterator[Tensor]:
    """Every tensor in a call's arguments or result (nested lists, tuples, dicts)."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors(item)


def spellings(*names: str) -> frozenset[TorchFunction]:
    """The same op reachable as ``torch.x``, ``F.x`` and ``torch._C._nn.x``: every one."""
    return frozenset(
        getattr(namespace, name)
        for namespace in (torch, F, torch._C._nn)
        for name in names
        if hasattr(namespace, name)
    )


def aten(*names: str) -> frozenset[TorchFunction]:
    """The ``default`` overloads of ATen ops, as they appear in ``.pt2`` graphs."""
    return frozenset(getattr(ATEN, name).default for name in names)


def methods(*names: str) -> frozenset[TorchFunction]:
    """``Tensor`` methods by name (``x.sigmoid()``, ``x.clamp_(…)``)."""
    return frozenset(getattr(Tensor, name) for name in names)


def is_in_place(func: TorchFunction) -> bool:
    """A spelling that writes its result into its input (``relu_``, ``aten.silu_.default``)."""
    return str(getattr(func, "__name__", "")).split(".")[0].endswith("_")


def constant(value: Any) -> bool:
    """A number, or a tensor that does not depend on the input (nor on any parameter)."""
    return not isinstance(value, Tensor) or not value.requires_grad


def is_zero(value: Any) -> bool:
    """A constant 0 (a number, or a tensor of zeros that depends on nothing)."""
    if isinstance(value, Tensor):
        return constant(value) and value.numel() > 0 and not bool(value.detach().any())
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


def spatial(x: Any) -> bool:
    """A (B, C, H, W) tensor."""
    return isinstance(x, Tensor) and x.dim() == IMAGE_RANK


def in_place(x: Tensor, result: Tensor, inplace: bool) -> Tensor:
    """Honour in-place activations: the caller may keep using ``x`` instead of the result."""
    if inplace:
        return x.copy_(result)
    return result
