"""Reverse rules: what one kind of layer does to the signal on its way down.

A rule is a small object with ``forward(x)`` (the layer's own forward value) and
``backward(signal, *saved)`` (what goes down instead of the gradient). :func:`apply_rule`
wires it into autograd, so convolutions, linear layers, pooling, concatenation and addition
keep their exact transposes from autograd while the nonlinearities follow the rule.

The rule names follow the literature:

- ``zeiler`` — the deconvnet (Zeiler & Fergus 2014, §2.1 "Rectification"): the
  reconstructed signal itself is passed through the ReLU, ``relu(signal)``; the forward
  ReLU mask plays no part.
- ``guided`` — guided backpropagation (Springenberg et al. 2015): ``relu(signal) * [x > 0]``.
- ``gradient`` — the plain gradient (Simonyan et al. 2014): ``signal * [x > 0]``.
- ``none`` — no rectification at all, as the old caffe-deconvnet demo did.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

RULES = ("zeiler", "guided", "gradient", "none")
LRN_MODES = ("skip", "gradient", "reapply")
COLLISION_MODES = ("sum", "overwrite")


class ReverseRule(ABC):
    """Base rule: subclasses set ``forward`` and ``backward``; ``saved`` picks what to keep."""

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """The layer's own forward value."""

    def saved(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        """Tensors ``backward`` needs, taken from the forward input and output."""
        return ()

    @abstractmethod
    def backward(self, signal: Tensor, *saved: Tensor) -> Tensor:
        """What goes down in place of the gradient."""


class _Rewired(torch.autograd.Function):
    """Forward value from ``rule.forward``, backward from ``rule.backward``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, rule: ReverseRule) -> Tensor:
        return rule.forward(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, rule = inputs
        ctx.rule = rule
        ctx.save_for_backward(*rule.saved(x, output))

    @staticmethod
    def backward(ctx: Any, signal: Tensor) -> tuple[Tensor, None]:
        return ctx.rule.backward(signal, *ctx.saved_tensors), None


def apply_rule(x: Tensor, rule: ReverseRule) -> Tensor:
    """``rule.forward(x)`` in the forward pass; ``rule.backward`` in the reverse pass."""
    return cast(Tensor, _Rewired.apply(x, rule))  # type: ignore[no-untyped-call]


# --- rectifiers -----------------------------------------------------------------------------


class ReLUDeconv(ReverseRule):
    """Deconvnet ReLU (Zeiler & Fergus 2014, §2.1): rectify the signal, ``relu(signal)``."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def backward(self, signal: Tensor, *saved: Tensor) -> Tensor:
        return torch.relu(signal)


class ReLUGuided(ReverseRule):
    """Guided backprop ReLU (Springenberg et al. 2015): ``relu(signal) * [x > 0]``."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def saved(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return (x > 0,)

    def backward(self, signal: Tensor, *saved: Tensor) -> Tensor:
        return torch.relu(signal) * saved[0]


class PassThrough(ReverseRule):
    """Forward with ``function``, send the signal down unchanged (no rectification).

    Used for the old caffe-deconvnet demo's ReLU (rule ``none``) and for ``lrn="skip"``
    (the paper is silent on LRN in the reverse pass; skipping it is the plain reading).
    """

    def __init__(self, function: Callable[[Tensor], Tensor]) -> None:
        self.function = function

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x)

    def backward(self, signal: Tensor, *saved: Tensor) -> Tensor:
        return signal


class LeakyGuided(ReverseRule):
    """Guided rule for leaky ReLU / PReLU: the local gradient, then ``relu`` of the product."""

    def __init__(self, function: Callable[[Tensor], Tensor], slope: Tensor | float) -> None:
        self.function = function
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x)

    def saved(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return (x > 0,)

    def backward(self, signal: Tensor, *saved: Tensor) -> Tensor:
        slope = self.slope
        if isinstance(slope, Tensor) and slope.numel() > 1:  # PReLU: one slope per channel
            slope = slope.reshape(-1, *([1] * (signal.dim() - 2)))
        local = torch.where(saved[0], torch.ones_like(signal), slope * torch.ones_like(signal))
        return torch.relu(signal * local)


class ReLU6Deconv(ReLUDeconv):
    """ReLU6 under the deconvnet: its rectifying part, ``relu(signal)``.

    The cap at 6 bounds forward activations; the reverse signal has no such scale, so only
    the rectification carries over.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(x)


class ReLU6Guided(ReLUGuided):
    """ReLU6 under guided backprop: ``relu(signal) * [0 < x < 6]``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(x)

    def saved(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return ((x > 0) & (x < 6),)


# --- normalisation --------------------------------------------------------------------------


class Reapply(ReverseRule):
    """Apply the forward operator to the signal.

    The old Caffe demo's LRN on the way down, and the deconvnet for leaky ReLU / PReLU: the
    signal passes through the same leaky rectifier, as ``relu`` does for ReLU.
    """

    def __init__(self, function: Callable[[Tensor], Tensor]) -> None:
        self.function = function

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x)

    def backward(self, signal: Tensor, *saved: Tensor) -> Tensor:
        return self.function(signal)


# --- pooling --------------------------------------------------------------------------------


def overwrite_collisions(pooled: Tensor, indices: Tensor, input_shape: torch.Size) -> Tensor:
    """Make max-unpooling overwrite instead of sum where pooling windows overlap.

    The old Caffe InvPooling layer zeroes its output and writes the pooled positions in
    raster order, so when two overlapping windows chose the same input pixel the later one
    wins. Autograd's max-pool backward sums them (the exact transpose). Masking the signal
    of every pooled position that is overwritten later turns the sum into the overwrite;
    the forward value is unchanged.

    Parameters
    ----------
    pooled : Tensor (B, C, *out_spatial)
    indices : LongTensor like ``pooled`` — flat argmax positions within each input plane.
    input_shape : shape of the pooling input (B, C, *in_spatial).
    """
    keep = overwrite_keep(indices, input_shape).to(pooled.dtype)
    return pooled * keep + (pooled * (1 - keep)).detach()


def overwrite_keep(indices: Tensor, input_shape: torch.Size) -> Tensor:
    """True where a pooled position is the last, in raster order, to write its switch."""
    flat = indices.flatten(2)
    order = torch.arange(flat.shape[2], device=flat.device).expand_as(flat)
    plane = int(torch.Size(input_shape[2:]).numel())
    last_writer = torch.full((*flat.shape[:2], plane), -1, dtype=torch.long, device=flat.device)
    last_writer = last_writer.scatter_reduce(2, flat, order, reduce="amax")
    return (last_writer.gather(2, flat) == order).reshape(indices.shape)


def pool_switches(module: torch.nn.MaxPool2d, x: Tensor) -> Tensor:
    """The switches ``module`` records for ``x``: flat argmax index in each input plane,
    the first maximum in raster order (as Caffe's pooling mask)."""
    return F.max_pool2d(
        x,
        module.kernel_size,
        module.stride,
        module.padding,
        module.dilation,
        ceil_mode=module.ceil_mode,
        return_indices=True,
    )[1]
