"""The rule table: what each reverse rule does to the signal at a rectifier, as data.

Every reverse rule is one frozen :class:`Rule` in :data:`RULES`; the command line's
choices, the explorer's validation, figure headers, captions and every instrument read
them from here, and the op table (:mod:`deconvnet.engine.ops`) asks a rule only its two
questions: is the signal itself rectified, and is it multiplied by the forward mask?

- ``zeiler`` — the deconvnet (Zeiler & Fergus 2014, §2.1 "Rectification"): the
  reconstructed signal itself is passed through the ReLU, ``relu(signal)``; the forward
  ReLU mask plays no part.
- ``guided`` — guided backpropagation (Springenberg et al. 2015): ``relu(signal) * [x > 0]``.
- ``gradient`` — the plain gradient (Simonyan et al. 2014): ``signal * [x > 0]``.
- ``none`` — no rectification at all, as the old caffe-deconvnet demo did.

A :class:`ReversePolicy` is the whole reverse-pass semantics of one call: a rule, what LRN
does on the way down (:data:`LRN_MODES`), how overlapping max-pool windows unpool
(:data:`COLLISION_MODES`) and whether the layers the paper never met (SiLU, GELU, gates,
LayerNorm) get their ReLU-like analogue or are refused (:data:`ACTIVATION_MODES`).
:func:`apply_rule` wires a :class:`ReverseRule` into autograd, so convolutions, pooling,
concatenation and addition keep their exact transposes while the nonlinearities follow the
rule.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, cast

import torch
from torch import Tensor

from deconvnet.engine.precision import FULL_PRECISION, PRECISIONS
from deconvnet.errors import UnsupportedLayerError

Rectifier = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Rule:
    """One reverse rule: how a rectifier passes the signal on the way down.

    Attributes
    ----------
    name : the ``rule=`` value.
    title : the figure header for its projections.
    description : one line saying what it does, for captions and manifests.
    rectifies : the signal itself goes through the rectifier (``relu(signal)``).
    masks : the signal is multiplied by the forward pass's mask (``[x > 0]`` at a ReLU);
        the forward's masks are then recorded.
    lrn : the LRN mode it gets when none is given.
    compat : it only reproduces another tool, so it is not offered side by side.
    """

    name: str
    title: str
    description: str
    rectifies: bool
    masks: bool
    lrn: str
    compat: bool = False

    @property
    def is_gradient(self) -> bool:
        """The plain gradient: autograd's own backward at every rectifier, nothing rewired."""
        return self.masks and not self.rectifies

    def local(self, derivative: Tensor) -> Tensor:
        """The mask this rule multiplies by at a rectifier ``f`` with local derivative
        ``f'(x)``: ``f'(x)`` itself (the gradient), clamped at 0 when the signal is
        rectified (guided: ``relu(signal)·max(f'(x), 0)``, which is ``relu(signal)·[x > 0]``
        at a ReLU)."""
        return derivative.clamp(min=0) if self.rectifies else derivative

    def rectify(
        self, signal: Tensor, mask: Tensor | None = None, rectifier: Rectifier = torch.relu
    ) -> Tensor:
        """The signal below a rectifier: ``rectifier(signal)`` if the rule rectifies, times
        ``mask`` (the forward's, in the signal's dtype) if it masks."""
        if self.rectifies:
            signal = rectifier(signal)
        if self.masks:
            if mask is None:
                raise ValueError(f"rule {self.name!r} needs the forward pass's mask")
            signal = signal * mask.to(signal.dtype)
        return signal


RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        Rule(
            "zeiler",
            "deconvnet projection",
            "deconvnet: ReLU of the backward signal",
            rectifies=True,
            masks=False,
            lrn="skip",
        ),
        Rule(
            "guided",
            "guided backprop",
            "guided: ReLU of signal, masked by forward",
            rectifies=True,
            masks=True,
            lrn="skip",
        ),
        Rule(
            "gradient",
            "gradient",
            "gradient: masked by forward ReLU only",
            rectifies=False,
            masks=True,
            lrn="gradient",
        ),
        Rule(
            "none",
            "projection",
            "none: the signal passes unrectified (the old Caffe demo)",
            rectifies=False,
            masks=False,
            lrn="skip",
            compat=True,
        ),
    )
}
"""Every reverse rule by name, in display order."""

DEFAULT_RULE = "zeiler"
GRADIENT_RULE = next(name for name, rule in RULES.items() if rule.is_gradient)
"""The rule that is autograd's own gradient, defined for every layer."""
COMPARED_RULES: tuple[str, ...] = tuple(name for name, rule in RULES.items() if not rule.compat)
"""The rules offered side by side (compare, the explorer's toggle)."""


@dataclass(frozen=True)
class LrnMode:
    """What a local response normalisation does on the way down; the paper is silent.

    ``exact``: its gradient (so the gradient rule stays ``torch.autograd.grad``);
    ``reapplies``: the forward LRN applied to the signal (the old Caffe demo); neither:
    the identity.
    """

    name: str
    description: str
    exact: bool = False
    reapplies: bool = False


LRN_MODES: dict[str, LrnMode] = {
    mode.name: mode
    for mode in (
        LrnMode("skip", "identity: the paper does not say"),
        LrnMode("gradient", "its exact gradient", exact=True),
        LrnMode("reapply", "the forward LRN applied to the signal", reapplies=True),
    )
}
COLLISION_MODES = ("sum", "overwrite")
"""``sum``: the exact transpose of overlapping max pooling; ``overwrite``: later windows
overwrite earlier ones (the old Caffe InvPooling layer)."""


@dataclass(frozen=True)
class ActivationMode:
    """What the rectifying rules do at the layers the paper never met.

    ``analogues``: smooth and piecewise rectifiers (SiLU, GELU, Hardswish, ELU, …) pass
    ``relu(signal)`` (zeiler) or ``relu(signal)·max(f'(x), 0)`` (guided); a sigmoid,
    hard-sigmoid or softmax whose output multiplies another tensor is a constant factor (a
    gate); normalisations with per-sample statistics (LayerNorm, GroupNorm, InstanceNorm,
    RMSNorm) scale the signal by ``γ/σ`` with their statistics frozen. Without it they are
    refused under the rectifying rules. The gradient rule is exact either way.
    """

    name: str
    description: str
    analogues: bool = False

    @property
    def caption(self) -> str:
        """What a figure's caption says of it: nothing for the paper's own semantics."""
        return f"{self.name} activations" if self.analogues else ""


ACTIVATION_MODES: dict[str, ActivationMode] = {
    mode.name: mode
    for mode in (
        ActivationMode("strict", "only ReLU-family rectifiers; anything else is refused"),
        ActivationMode(
            "relu-like",
            "smooth rectifiers as ReLU, gates and per-sample norms as constant factors",
            analogues=True,
        ),
    )
}
DEFAULT_ACTIVATIONS = "strict"
ANALOGUES = next(name for name, mode in ACTIVATION_MODES.items() if mode.analogues)
"""The activation mode that gives SiLU, GELU, gates and LayerNorm their analogues."""


@dataclass(frozen=True)
class ReversePolicy:
    """The reverse-pass semantics, validated once.

    Parameters
    ----------
    rule : a name in :data:`RULES` (``"zeiler"``, ``"guided"``, ``"gradient"``, ``"none"``).
    lrn : a name in :data:`LRN_MODES` (``"skip"``, ``"gradient"``, ``"reapply"``).
    collisions : a name in :data:`COLLISION_MODES` (``"sum"``, ``"overwrite"``).
    activations : a name in :data:`ACTIVATION_MODES` (``"strict"``, ``"relu-like"``).
    precision : a name in :data:`~deconvnet.engine.precision.PRECISIONS`: the reverse
        pass's number type (``"float32"``, full precision, by default).
    """

    rule: str = DEFAULT_RULE
    lrn: str = RULES[DEFAULT_RULE].lrn
    collisions: str = COLLISION_MODES[0]
    activations: str = DEFAULT_ACTIVATIONS
    precision: str = FULL_PRECISION

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("rule", self.rule, tuple(RULES)),
            ("lrn", self.lrn, tuple(LRN_MODES)),
            ("collisions", self.collisions, COLLISION_MODES),
            ("activations", self.activations, tuple(ACTIVATION_MODES)),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")

    @classmethod
    def of(
        cls,
        rule: str | None = None,
        lrn: str | None = None,
        collisions: str | None = None,
        activations: str | None = None,
        precision: str | None = None,
    ) -> ReversePolicy:
        """The policy for what was given; the rest by default (the LRN mode is the rule's
        own: its exact gradient for the gradient rule, so that it equals
        ``torch.autograd.grad``, identity for the others)."""
        name = rule or DEFAULT_RULE
        found = RULES.get(name)
        return cls(
            rule=name,
            lrn=lrn or (found.lrn if found else RULES[DEFAULT_RULE].lrn),
            collisions=collisions or COLLISION_MODES[0],
            activations=activations or DEFAULT_ACTIVATIONS,
            precision=precision or FULL_PRECISION,
        )

    def record(self) -> dict[str, str]:
        """Every field by name, as manifests record the reverse pass."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @property
    def reverse_rule(self) -> Rule:
        """The rule's entry in :data:`RULES`."""
        return RULES[self.rule]

    @property
    def lrn_mode(self) -> LrnMode:
        return LRN_MODES[self.lrn]

    @property
    def activation_mode(self) -> ActivationMode:
        return ACTIVATION_MODES[self.activations]

    @property
    def analogues(self) -> bool:
        """A rectifying rule that gives SiLU, GELU, gates and per-sample norms their
        ReLU-like analogues (never true for the gradient rule, which rewires nothing)."""
        return self.activation_mode.analogues and not self.reverse_rule.is_gradient

    @property
    def overwrites(self) -> bool:
        """Later max-pool windows overwrite earlier ones instead of summing."""
        return self.collisions == COLLISION_MODES[1]


# --- wiring a rule into autograd -------------------------------------------------------------


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


def is_engine_function(function: type) -> bool:
    """The engine's own ``autograd.Function`` (the one every rule is wired through)."""
    return function is _Rewired


def apply_rule(x: Tensor, rule: ReverseRule) -> Tensor:
    """``rule.forward(x)`` in the forward pass; ``rule.backward`` in the reverse pass (none
    without autograd: the forward value alone)."""
    if not torch.is_grad_enabled():
        return rule.forward(x)
    return cast(Tensor, _Rewired.apply(x, rule))  # type: ignore[no-untyped-call]


class Rectify(ReverseRule):
    """A rectifier ``function`` under ``rule``: ``rule.rectify(signal, mask)``, the mask
    being ``mask_of(x)`` (``[x > 0]`` for ReLU, ``[0 < x < 6]`` for ReLU6), kept only when the
    rule masks. ReLU under the deconvnet is ``relu(signal)`` (Zeiler & Fergus 2014, §2.1)."""

    def __init__(
        self, rule: Rule, function: Rectifier, mask_of: Callable[[Tensor], Tensor]
    ) -> None:
        self.rule = rule
        self.function = function
        self.mask_of = mask_of

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x)

    def saved(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return (self.mask_of(x),) if self.rule.masks else ()

    def backward(self, signal: Tensor, *saved: Tensor) -> Tensor:
        return self.rule.rectify(signal, saved[0] if saved else None)


class Refused(ReverseRule):
    """Forward with ``function``; refuse when the reverse signal reaches it.

    The refusal waits for the signal: an op that the projection never passes through (a
    gate's branch, a weight standardisation, anything above the layer) is not an error,
    and one that it passes through is, with ``message`` naming the op and its module.
    """

    def __init__(self, function: Rectifier, message: str) -> None:
        self.function = function
        self.message = message

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x)

    def backward(self, signal: Tensor, *saved: Tensor) -> Tensor:
        raise UnsupportedLayerError(self.message)


class Frozen(ReverseRule):
    """A normalisation with its statistics frozen: the per-sample affine map
    ``x ↦ (x − μ)/σ·γ + β`` with μ and σ constants, so the signal is scaled by
    ``scale_of(x)`` (``γ/σ``, broadcast to ``x``)."""

    def __init__(self, function: Rectifier, scale_of: Callable[[Tensor], Tensor]) -> None:
        self.function = function
        self.scale_of = scale_of

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x)

    def saved(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return (self.scale_of(x),)

    def backward(self, signal: Tensor, *saved: Tensor) -> Tensor:
        return signal * saved[0].to(signal.dtype)


class PassThrough(ReverseRule):
    """Forward with ``function``, send the signal down unchanged (no rectification).

    Used for ``lrn="skip"`` (the paper is silent on LRN in the reverse pass; skipping it is
    the plain reading) and for the leaky rectifiers under the rule ``none``.
    """

    def __init__(self, function: Rectifier) -> None:
        self.function = function

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x)

    def backward(self, signal: Tensor, *saved: Tensor) -> Tensor:
        return signal


class Reapply(ReverseRule):
    """Apply the forward operator to the signal.

    The old Caffe demo's LRN on the way down, and the deconvnet for leaky ReLU / PReLU: the
    signal passes through the same leaky rectifier, as ``relu`` does for ReLU.
    """

    def __init__(self, function: Rectifier) -> None:
        self.function = function

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x)

    def backward(self, signal: Tensor, *saved: Tensor) -> Tensor:
        return self.function(signal)


class LeakyGuided(ReverseRule):
    """Guided rule for leaky ReLU / PReLU: the local gradient, then ``relu`` of the product."""

    def __init__(self, function: Rectifier, slope: Tensor | float) -> None:
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
