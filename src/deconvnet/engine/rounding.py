"""How far a reduced-precision reverse pass may be from full precision, estimated on the way.

A projection computed in bfloat16 is checked against its full-precision twin in the tests
and benchmarks (:func:`deconvnet.figures.display.display_match`); a face computing
thousands of them cannot afford the twin. This module estimates, per seed and without the
twin, the relative RMS rounding error of the reduced pass — a statistical running error
analysis (each rounding an independent error of variance ``u²/3`` relative to the rounded
value, ``u`` the type's unit roundoff):

- a transposed convolution sums its input times its filters in float32 and rounds once:
  an input error spread like the signal, ``ρ_in² · ‖s‖²``, leaves it as
  ``ρ_in² · Σ_c ‖s_c‖² ‖W_c‖²`` (``s_c`` the signal on input channel ``c``, ``W_c`` that
  channel's filters), the rounding of the filters and products adds ``u²/3`` of the same,
  and the output rounds once more. Where the output is much smaller than its terms
  (cancellation) the relative error grows, as it does in the pass itself;
- where two signals meet, the larger relative error goes on, rounded once more;
- every other step (rectification, masks, unpooling, scales, reshapes) keeps the relative
  error and may round once.

Measured on the benchmark's ResNet-18, CaffeNet and DenseNet-121 rows in bfloat16, the
estimate is 1.3–2.5× the true relative error: conservative, and close enough that no real
projection is refused (see ``tests/engine/test_rounding.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from deconvnet.engine.ops.convolution import ConvNode
from deconvnet.engine.window import Window

if TYPE_CHECKING:
    from deconvnet.engine.ops.op import Node

TINY = 1e-30
"""Energies are floored here: an all-zero signal has no relative error to speak of."""


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half the distance from 1 to the next number of ``dtype`` (2⁻⁸ for bfloat16)."""
    return float(torch.finfo(dtype).eps) / 2


def energy(data: Tensor) -> Tensor:
    """``‖data[n]‖²`` per seed (float32)."""
    return _norm(data, tuple(range(1, data.dim()))).square()


def _norm(data: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Norms over ``dims``, read in place (a channel slice is not copied) and in the data's
    own type (CPU reductions accumulate bfloat16 in float32, at a seventh of the cost of
    converting first); float16, whose range a norm may leave, is converted."""
    dtype = torch.float32 if data.dtype == torch.float16 else None
    norm: Tensor = torch.linalg.vector_norm(data, dim=dims, dtype=dtype)
    return norm.float()


class Rounding:
    """The running estimate for one batch of seeds: the relative error variance ``ρ²``
    (per seed) of the signal at each value the driver holds.

    It reads the signal's energy only where the estimate needs it — a convolution's input
    per channel and output, and the parts of a value that several signals reach — so a
    chain of rectifiers, scales and unpooling costs nothing."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.variance = unit_roundoff(dtype) ** 2 / 3
        self._errors: dict[int, Tensor] = {}
        self._parts: dict[int, list[tuple[Tensor, Tensor]]] = {}
        self._energies: dict[int, Tensor | None] = {}  # of a value's only part, if known
        self._filters: dict[int, Tensor] = {}
        self._channels: tuple[Tensor, Tensor] | None = None  # (data, its per-channel energy)
        self.projected: Tensor | None = None
        """The projections' ``ρ²`` (N,), once :meth:`finish` was called."""

    def start(self, value: int, seed: Tensor) -> None:
        """The seed: ±1, held exactly."""
        self._errors[value] = seed.new_zeros(seed.shape[0], dtype=torch.float32)

    def merge(
        self,
        value: int,
        before: Window | None,
        part: Window,
        error: Tensor,
        known: Tensor | None = None,
    ) -> None:
        """``part``, with ``error`` (and its energy when ``known``), arrives at ``value``,
        which held ``before``."""
        if before is None:
            self._errors[value] = error
            self._energies[value] = known
            return
        parts = self._parts.setdefault(value, [])
        if not parts:  # the first part's energy, now that it has company
            first = self._energies.pop(value, None)
            parts.append((self._errors.pop(value), energy(before.data) if first is None else first))
        parts.append((error, energy(part.data) if known is None else known))

    def take(self, values: tuple[int, ...], arriving: list[Window | None]) -> Tensor:
        """The error of the signal arriving at a node (the largest, for several outputs):
        where several parts were summed, their errors weighted by their energies, relative
        to the sum's (where the parts cancel, the relative error grows), rounded once."""
        errors = []
        for value, window in zip(values, arriving, strict=True):
            if window is None:
                continue
            parts = self._parts.pop(value, None)
            self._energies.pop(value, None)
            if parts is None:
                errors.append(self._errors.pop(value))
                continue
            total = self._per_channel(window.data).sum(dim=1).clamp_min(TINY)
            weighted = torch.stack([error * part for error, part in parts]).sum(dim=0)
            errors.append(weighted / total + self.variance)
        return torch.stack(errors).amax(dim=0)

    def through(
        self, node: Node, signal: Window, departing: Window, error: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """The error of ``departing``, the reverse of ``node`` applied to ``signal``, and
        its energy where that came free (None otherwise)."""
        if not isinstance(node, ConvNode):
            start = _channel_slice(departing.data, signal.data)
            if start is None:
                return error + self.variance, None
            width = departing.data.shape[1]  # a concatenation's part: no new rounding
            return error, self._per_channel(signal.data)[:, start : start + width].sum(dim=1)
        terms = self._per_channel(signal.data) @ self._filter_energy(node)
        out = energy(departing.data)
        grown: Tensor = (error + self.variance) * terms / out.clamp_min(TINY) + self.variance
        return grown, out

    def _per_channel(self, data: Tensor) -> Tensor:
        """``data``'s energy per seed and channel, read once per signal."""
        cached = self._channels
        if cached is not None and cached[0] is data:
            return cached[1]
        per_channel = _channel_energy(data)
        self._channels = (data, per_channel)
        return per_channel

    def finish(self, value: int, window: Window | None) -> None:
        """The pass has ended with ``window`` at ``value`` (the image): keep its ``ρ²`` per
        seed in :attr:`projected` (None where no signal arrived)."""
        if window is not None and (value in self._errors or value in self._parts):
            self.projected = self.take((value,), [window])

    def _filter_energy(self, node: ConvNode) -> Tensor:
        """``‖W_c‖²`` for each channel the reverse reads (the forward's output channel)."""
        key = id(node)
        if key not in self._filters:
            flat = node.weight.reshape(node.weight.shape[0], -1)
            self._filters[key] = torch.linalg.vector_norm(flat, dim=1, dtype=torch.float32).square()
        return self._filters[key]


def _channel_slice(part: Tensor, whole: Tensor) -> int | None:
    """The first channel of ``whole`` that ``part`` views, when it is a channel slice."""
    if (
        part.dim() != whole.dim()
        or part.shape[0] != whole.shape[0]
        or part.shape[2:] != whole.shape[2:]
        or part.stride() != whole.stride()
        or part.untyped_storage().data_ptr() != whole.untyped_storage().data_ptr()
    ):
        return None
    offset, step = part.storage_offset() - whole.storage_offset(), whole.stride(1)
    if step <= 0 or offset % step:
        return None
    start = offset // step
    return start if start >= 0 and start + part.shape[1] <= whole.shape[1] else None


def _channel_energy(data: Tensor) -> Tensor:
    """``‖data[n, c]‖²`` (N, C), float32."""
    return _norm(data, tuple(range(2, data.dim()))).square()
