"""The same selection projected with each reverse rule, side by side on one colour scale.

The three rules differ only in how the backward signal passes a ReLU (Springenberg et al.
2015, Fig. 1): the deconvnet rectifies the signal itself, plain gradients keep the forward
pass's on/off pattern, guided backpropagation does both (the rule table,
:data:`~deconvnet.engine.rules.RULES`, says what each does). :func:`compare_rules` computes
the projections; :mod:`deconvnet.figures.compare` shows them on one shared scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypedDict

import torch
from torch import Tensor, nn

from deconvnet.engine.engine import Deconvnet
from deconvnet.engine.projection import Projection
from deconvnet.engine.receptive import Box
from deconvnet.engine.rules import COMPARED_RULES, DEFAULT_ACTIVATIONS
from deconvnet.engine.selection import Selection

RULES: tuple[str, ...] = COMPARED_RULES
"""The rules compared by default, in display order: every rule of the table but those that
only reproduce another tool."""


@dataclass(frozen=True, eq=False)
class Comparison:
    """Projections of one selection under each rule.

    Attributes
    ----------
    rules : the rules, in order.
    images : Tensor (R, K, C, H, W) — rule r's projection of selection k (first image).
    channels, values : Tensor (K,) — the seeded map and activation (same for every rule).
    positions : LongTensor (K, ndim) or None.
    layer, selection : what was projected.
    boxes : per seed, the input box it looks at: its receptive field (it may reach past
        the image's border), or for a joint selection the seeded units' fields together,
        clipped; None where unknown (fc layers).
    activations : the activation policy every rule ran with (``"strict"``, ``"relu-like"``).
    precisions : per rule, the number type each projection's reverse pass ran in.
    """

    rules: tuple[str, ...]
    images: Tensor
    channels: Tensor
    values: Tensor
    positions: Tensor | None
    layer: str
    selection: Selection
    boxes: tuple[Box | None, ...] = ()
    activations: str = DEFAULT_ACTIVATIONS
    precisions: tuple[tuple[str, ...], ...] = ()


class _EngineOptions(TypedDict, total=False):
    """Keyword arguments passed on to :class:`Deconvnet` only when given."""

    batch_size: int


def compare_rules(
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module,
    select: Selection,
    *,
    rules: Sequence[str] = RULES,
    lrn: str | None = None,
    collisions: str | None = None,
    activations: str | None = None,
    precision: str | None = None,
    batch_size: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Comparison:
    """Project ``select`` of ``layer`` for the first image of ``x`` with each rule.

    The forward pass and therefore the selection (channel, position) are the same for
    every rule; only the reverse pass differs (``lrn``, ``collisions``, ``activations`` and
    ``precision`` as in :class:`~deconvnet.engine.engine.Deconvnet`, the same for every rule).
    """
    images, precisions = [], []
    first = None
    options: _EngineOptions = {} if batch_size is None else {"batch_size": batch_size}
    for done, rule in enumerate(rules, start=1):
        with Deconvnet(
            model,
            rule,
            lrn=lrn,
            collisions=collisions,
            activations=activations,
            precision=precision,
            **options,
        ) as net:
            result = net.project(x[:1], layer, select)
        images.append(result.images[0])
        precisions.append(tuple(result.precision_at(0, k) for k in range(result.images.shape[1])))
        first = first or result
        if progress is not None:
            progress(done, len(rules))
    assert first is not None  # rules is never empty: RULES by default
    return Comparison(
        rules=tuple(rules),
        images=torch.stack(images).cpu(),
        channels=first.channels[0].cpu(),
        values=first.values[0].cpu(),
        positions=None if first.positions is None else first.positions[0].cpu(),
        layer=first.layer,
        selection=select,
        boxes=_boxes(first),
        activations=first.policy.activations,
        precisions=tuple(precisions),
    )


def _boxes(projection: Projection) -> tuple[Box | None, ...]:
    """Each seed's own receptive field for the first image (see :attr:`Comparison.boxes`)."""
    count = projection.images.shape[1]
    field = projection.receptive_field
    if field is None or projection.extents is None:
        return (None,) * count
    image_hw = (int(projection.images.shape[-2]), int(projection.images.shape[-1]))
    if field.is_global:
        return ((0, 0, *image_hw),) * count
    joint = projection.positions is None
    return tuple(
        field.span(extent, image_hw if joint else None) for extent in projection.extents[0].tolist()
    )
