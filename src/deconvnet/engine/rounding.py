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
- two signals summed carry their errors, weighted by their energies, relative to the
  sum's (cancellation again), and round once;
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
    """``‖data[n]‖²`` per seed, accumulated in float32."""
    flat = data.reshape(data.shape[0], -1)
    norm: Tensor = torch.linalg.vector_norm(flat, dim=1, dtype=torch.float32)
    return norm.square()


class Rounding:
    """The running estimate for one batch of seeds: the relative error variance ``ρ²``
    (per seed) of the signal at each value the driver holds."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.variance = unit_roundoff(dtype) ** 2 / 3
        self._errors: dict[int, Tensor] = {}
        self._filters: dict[int, Tensor] = {}

    def start(self, value: int, seed: Tensor) -> None:
        """The seed: ±1, held exactly."""
        self._errors[value] = seed.new_zeros(seed.shape[0], dtype=torch.float32)

    def take(self, values: tuple[int, ...]) -> Tensor:
        """The error arriving at a node (the largest, for a node with several outputs)."""
        arriving = [self._errors.pop(value) for value in values if value in self._errors]
        return torch.stack(arriving).amax(dim=0)

    def through(self, node: Node, signal: Window, departing: Window, error: Tensor) -> Tensor:
        """The error of ``departing``, the reverse of ``node`` applied to ``signal``."""
        if not isinstance(node, ConvNode):
            return error + self.variance
        data = signal.data
        per_channel = torch.linalg.vector_norm(
            data.reshape(*data.shape[:2], -1), dim=2, dtype=torch.float32
        ).square()
        terms = per_channel @ self._filter_energy(node)
        out = energy(departing.data).clamp_min(TINY)
        grown: Tensor = (error + self.variance) * terms / out + self.variance
        return grown

    def merge(
        self, value: int, before: Window | None, part: Window, error: Tensor, total: Window
    ) -> None:
        """``part`` (with ``error``) summed into what ``value`` held before."""
        if before is None:
            self._errors[value] = error
            return
        held = self._errors[value]
        weighted = held * energy(before.data) + error * energy(part.data)
        self._errors[value] = weighted / energy(total.data).clamp_min(TINY) + self.variance

    def result(self, value: int) -> Tensor | None:
        """``ρ²`` per seed at ``value`` (None where no signal arrived)."""
        return self._errors.get(value)

    def _filter_energy(self, node: ConvNode) -> Tensor:
        """``‖W_c‖²`` for each channel the reverse reads (the forward's output channel)."""
        key = id(node)
        if key not in self._filters:
            weight = node.weight
            flat = weight.reshape(weight.shape[0], -1)
            self._filters[key] = torch.linalg.vector_norm(flat, dim=1, dtype=torch.float32).square()
        return self._filters[key]
