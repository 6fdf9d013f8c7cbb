"""The op table: every torch op the engine knows, declared once.

Each entry (:class:`~deconvnet.engine.ops.op.Op`) is one op family with all its spellings
— module (through the functional it calls), functional, method, in-place, ATen overload —
its parsed, typed call, its receptive-field geometry, the graph node it records and that
node's reverse step on a window of the signal. The rule mode
(:mod:`~deconvnet.engine.policies`), the graph recorder (:mod:`~deconvnet.engine.graph`)
and the receptive-field tracer (:mod:`~deconvnet.engine.receptive`) all look ops up here,
so adding a layer type is one entry in one of these files, plus its tests:

- :mod:`~deconvnet.engine.ops.convolution`: 2-D convolution;
- :mod:`~deconvnet.engine.ops.pooling`: max, average, adaptive and power-average pooling;
- :mod:`~deconvnet.engine.ops.rectifiers`: ReLU (every spelling, clamps, maximum and where
  included), ReLU6, leaky rectifiers, the activations with no deconvnet rule;
- :mod:`~deconvnet.engine.ops.smooth`: SiLU, GELU, Mish, Hardswish, ELU/CELU/SELU, Softplus;
- :mod:`~deconvnet.engine.ops.gates`: sigmoid, hard-sigmoid and softmax gates, products
  (swish written by hand, constant factors);
- :mod:`~deconvnet.engine.ops.normalisation`: BatchNorm, LRN, dropout, and the
  normalisations with per-sample statistics (LayerNorm, GroupNorm, InstanceNorm, RMSNorm);
- :mod:`~deconvnet.engine.ops.structure`: addition, concatenation, splits, reshapes,
  padding and slicing.

An op that is not in the table keeps autograd's exact transpose in the general path, takes
the union of its inputs' fields when it keeps H×W (global otherwise) and makes the graph
take the general path when the projected layer depends on it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deconvnet.engine.ops import (
    averaging,
    convolution,
    gates,
    normalisation,
    pooling,
    rectifiers,
    smooth,
    structure,
)
from deconvnet.engine.ops.op import Op, TorchFunction

FAMILIES: tuple[Op[Any], ...] = (
    *convolution.FAMILIES,
    *pooling.FAMILIES,
    *averaging.FAMILIES,
    *rectifiers.FAMILIES,
    *smooth.FAMILIES,
    *gates.FAMILIES,
    *normalisation.FAMILIES,
    *structure.FAMILIES,
)
"""Every entry of the table."""


def _by_function() -> dict[TorchFunction, Op[Any]]:
    table: dict[TorchFunction, Op[Any]] = {}
    for family in FAMILIES:
        for function in family.functions:
            if function in table:
                raise ValueError(f"{function!r} is in two op families")
            table[function] = family
    return table


OPS: dict[TorchFunction, Op[Any]] = _by_function()
"""Each spelling's entry: the one lookup of every part of the engine."""
MODULE_OPS: tuple[tuple[type[nn.Module], Op[Any]], ...] = tuple(
    (module, family) for family in FAMILIES for module in family.modules
)
"""Module classes handled as a whole, with their entries."""


def module_op(module: nn.Module) -> Op[Any] | None:
    """The entry handling ``module`` as a whole, if any."""
    return next((op for kind, op in MODULE_OPS if isinstance(module, kind)), None)
