"""Blank projections, explained: which projections show nothing, where their reverse signal
died on the way down, and which rule does reach the pixels.

A deconvnet projection can be exactly zero: the ``zeiler`` rule rectifies the backward
signal at every ReLU, and once every value reaching a layer is negative nothing passes
(on SqueezeNet the class maps of ``pool10`` die inside ``fire5``). A figure of flat grey
tiles says nothing; :func:`explain_blanks` says which tiles are blank, the lowest layer the
signal still reached, and whether ``guided`` or ``gradient`` reach the pixels from the same
seeds, so every face can say it where the user looks.

The trace runs its own forward pass under the engine's rule mode and reads the reverse
signal at every module's output with :func:`torch.autograd.grad` (the same rules the
engine applies; its windowed path is tested equal to this general one). It runs only for
blank projections, after the fact, and leaves the model as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from deconvnet.engine import guard
from deconvnet.engine.capture import forward_until
from deconvnet.engine.engine import Deconvnet
from deconvnet.engine.hooks import model_lock
from deconvnet.engine.layers import resolve_layer
from deconvnet.engine.policies import RuleMode
from deconvnet.engine.projection import Projection
from deconvnet.engine.rules import COMPARED_RULES, ReversePolicy
from deconvnet.engine.selection import Units
from deconvnet.errors import LayerNotReachedError
from deconvnet.models import naming

RULES: tuple[str, ...] = COMPARED_RULES
"""The rules tried from the same seeds when a projection is blank, in this order."""
DISPLAY_LEVELS = 127
"""Grey levels between zero and the largest magnitude of a display range (the signed views
of :mod:`deconvnet.figures.render` put zero at 128 and +-max at 128 +- 127)."""
HALF_LEVEL = 0.5
"""A value below half a display level of its range rounds to the zero grey: not shown."""


def is_blank(projection: Tensor, scale: float | None = None) -> bool:
    """Whether a projection shows nothing: all zeros, or (drawn on a shared display range
    whose largest magnitude is ``scale``) every value below half a grey level of it."""
    largest = float(projection.detach().abs().max()) if projection.numel() else 0.0
    if largest == 0.0:
        return True
    return scale is not None and largest / scale * DISPLAY_LEVELS < HALF_LEVEL


@dataclass(frozen=True)
class BlankReport:
    """The blank projections of one image, and why.

    Attributes
    ----------
    layer : the projected layer as shown (its alias, else its dotted name).
    rule : the rule that gave the blank projections.
    blank : indices ``k`` of the blank projections.
    reached : per blank ``k``, the lowest layer (as shown; a block's name for the layers
        inside it) whose output the signal still reached, ``None`` when it died at the
        projected layer itself or was not traced (joint selections).
    reaching : the other rules whose projections of the same seeds are not blank, each
        with how many of the blank seeds it brings to the pixels.
    """

    layer: str
    rule: str
    blank: tuple[int, ...]
    reached: dict[int, str | None] = field(default_factory=dict)
    reaching: dict[str, int] = field(default_factory=dict)

    def died_at(self) -> str | None:
        """The layer most blank projections died below (for one summary line)."""
        places = [place for place in self.reached.values() if place is not None]
        return max(set(places), key=places.count) if places else None

    def sentence(self, count: int) -> str:
        """One line for a figure, a manifest and stderr, e.g. ``4 of 5 projections are
        blank: the zeiler signal from pool10 is zero below fire7; --rule guided reaches
        the pixels``."""
        return f"{len(self.blank)} of {count} projections are blank: {self.reason()}"

    def reason(self, rule_option: str = "--rule ") -> str:
        """Why, and what to do instead (``rule_option`` names how a face picks a rule)."""
        where = self.died_at()
        died = f" is zero below {where}" if where else " is zero before it reaches the pixels"
        others = [rule for rule, seeds in self.reaching.items() if seeds]
        if others:
            helps = f"; {rule_option}{others[0]} reaches the pixels"
        else:
            helps = "; no rule reaches the pixels from these units"
        return f"the {self.rule} signal from {self.layer}{died}{helps}"


def explain_blanks(
    model: nn.Module,
    projection: Projection,
    image: int = 0,
    *,
    scales: Sequence[float | None] | None = None,
    rules: Sequence[str] = RULES,
) -> BlankReport | None:
    """Which projections of image ``image`` are blank (:func:`is_blank`, each drawn on its
    ``scales[k]`` range when given), where their signal died and which of ``rules`` reaches
    the pixels from the same seeds; ``None`` when none is blank.

    ``projection`` is what :meth:`~deconvnet.engine.engine.Deconvnet.project` returned for
    ``model``; its inputs, seeds and policy are reused, and the model is left as it was.
    """
    images = projection.images[image]
    count = images.shape[0]
    blank = tuple(
        k for k in range(count) if is_blank(images[k], None if scales is None else scales[k])
    )
    if not blank:
        return None
    aliases = naming.aliases_of(model)
    shown = naming.display_name(aliases, projection.layer)
    report = BlankReport(layer=shown, rule=projection.policy.rule, blank=blank)
    traceable = (
        projection.positions is not None
        and projection.inputs is not None
        and guard.CALL_INDEX_SEPARATOR not in projection.layer
    )
    if not traceable:
        return report
    assert projection.inputs is not None and projection.positions is not None
    x = projection.inputs[image : image + 1]
    channels = projection.channels[image, list(blank)]
    positions = projection.positions[image, list(blank)]
    reached = _reached(model, x, projection.layer, channels, positions, projection.policy)
    report.reached.update(dict(zip(blank, reached, strict=True)))
    if positions.shape[-1] == 2:
        for rule in rules:
            if rule != projection.policy.rule:
                seeds = (channels, positions)
                activations = projection.policy.activations
                report.reaching[rule] = _reaching(
                    model, x, projection.layer, rule, activations, *seeds
                )
    return report


def _reaching(
    model: nn.Module,
    x: Tensor,
    layer: str,
    rule: str,
    activations: str,
    channels: Tensor,
    positions: Tensor,
) -> int:
    """How many of the seeds ``rule`` projects to something visible, under the projection's
    own activation policy (a relu-like projection's blanks are explained relu-like)."""
    with Deconvnet(model, rule, activations=activations) as net:
        result = net.project(x, layer, Units(channels=channels, positions=positions))
    return sum(not is_blank(result.images[0, k]) for k in range(channels.numel()))


def _reached(
    model: nn.Module,
    x: Tensor,
    layer: str,
    channels: Tensor,
    positions: Tensor,
    policy: ReversePolicy,
) -> list[str | None]:
    """Per seed, the lowest module output (in forward order, as shown) that the reverse
    signal of ``policy`` still reaches with a non-zero value."""
    name, _ = resolve_layer(model, layer)
    named = [(module_name, module) for module_name, module in model.named_modules() if module_name]

    def keep(module_name: str, output: Any) -> Tensor | None:
        return output if isinstance(output, Tensor) and output.requires_grad else None

    guard.require_eval(model)
    with model_lock(model), guard.preserved(model), torch.enable_grad():
        start = x.detach().clone().requires_grad_(True)
        try:
            with RuleMode(policy, model):
                captured = forward_until(model, start, named, keep=keep, until=name, shield=True)
        except LayerNotReachedError:
            return [None] * channels.numel()
        outputs = [(module_name, out) for module_name, out in captured.items() if out is not None]
        if not outputs or outputs[-1][0] != name:
            return [None] * channels.numel()
        below = outputs[:-1]
        y = outputs[-1][1]
        found: list[str | None] = []
        for channel, position in zip(channels.tolist(), positions.tolist(), strict=True):
            unit = y[(0, channel, *position)]
            signals = torch.autograd.grad(
                unit,
                [tensor for _, tensor in below],
                grad_outputs=unit.detach(),
                retain_graph=True,
                allow_unused=True,
            )
            alive = [
                module_name
                for (module_name, _), signal in zip(below, signals, strict=True)
                if signal is not None and bool(signal.any())
            ]
            found.append(_shown(model, alive[0]) if alive else None)
    return found


def _shown(model: nn.Module, module: str) -> str:
    """A module as the user knows it: its block (``fire5``) or its own shown name."""
    return naming.block_of(model, module) or naming.display_name(naming.aliases_of(model), module)
