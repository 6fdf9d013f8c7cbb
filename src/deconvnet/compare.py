"""The same selection projected with each reverse rule, side by side on one colour scale.

The three rules differ only in how the backward signal passes a ReLU (Springenberg et al.
2015, Fig. 1): the deconvnet rectifies the signal itself, plain gradients keep the forward
pass's on/off pattern, guided backpropagation does both. Showing them on one shared scale
(:func:`deconvnet.render.shared_range`) makes their strengths comparable; the signed view
puts zero at grey so negative evidence shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.engine import Deconvnet
from deconvnet.render import (
    DisplayMode,
    DisplayRange,
    contact_sheet,
    shared_range,
    to_display,
)
from deconvnet.selection import Selection

RULES: tuple[str, ...] = ("zeiler", "guided", "gradient")
"""The rules compared, in display order."""

RULE_DESCRIPTIONS: dict[str, str] = {
    "zeiler": "deconvnet: ReLU of the backward signal",
    "guided": "guided: ReLU of signal, masked by forward",
    "gradient": "gradient: masked by forward ReLU only",
}
"""One line per rule for figure captions and manifests."""


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
    """

    rules: tuple[str, ...]
    images: Tensor
    channels: Tensor
    values: Tensor
    positions: Tensor | None
    layer: str
    selection: Selection


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
    batch_size: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Comparison:
    """Project ``select`` of ``layer`` for the first image of ``x`` with each rule.

    The forward pass and therefore the selection (channel, position) are the same for
    every rule; only the reverse pass differs.
    """
    images = []
    first = None
    options: _EngineOptions = {} if batch_size is None else {"batch_size": batch_size}
    for done, rule in enumerate(rules, start=1):
        with Deconvnet(model, rule=rule, **options) as net:
            result = net.project(x[:1], layer, select)
        images.append(result.images[0])
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
    )


def seed_label(comparison: Comparison, k: int) -> str:
    """``map 12 @ (3, 4) = 5.1`` for selection ``k``."""
    channel = int(comparison.channels[k])
    what = f"map {channel}" if channel >= 0 else "joint"
    if comparison.positions is not None and comparison.positions.shape[-1] > 0:
        what += " @ (" + ", ".join(str(int(p)) for p in comparison.positions[k]) + ")"
    return f"{what} = {float(comparison.values[k]):.3g}"


def comparison_figure(
    comparison: Comparison,
    image: np.ndarray | None = None,
    *,
    channel_order: Literal["RGB", "BGR"] = "RGB",
) -> np.ndarray:
    """A sheet: per selection, a row on the shared min-max scale, a signed row on the shared
    scale, and a signed row where each rule has its own scale.

    The shared rows compare magnitudes honestly (rules can differ by orders of magnitude,
    e.g. the deconvnet's ``relu`` lets through signals the forward mask would stop, and
    they cancel); the last row shows each rule's pattern even when its values are small.
    Columns are the input (if given) then one rule each; each tile says what it shows and,
    under the rule's name, what the rule does.
    """
    minmax = shared_range(list(comparison.images), "minmax")
    signed = shared_range(list(comparison.images), "signed")
    tiles: list[np.ndarray] = []
    labels: list[str] = []
    views: tuple[tuple[DisplayMode, DisplayRange | None], ...] = (
        ("minmax", minmax),
        ("signed", signed),
        ("signed", None),
    )
    for k in range(comparison.images.shape[1]):
        for mode, scale in views:
            if image is not None:
                tiles.append(image)
                labels.append(f"input\n{seed_label(comparison, k)}\n{comparison.layer}")
            for r, rule in enumerate(comparison.rules):
                tiles.append(
                    to_display(
                        comparison.images[r, k], mode, scale=scale, channel_order=channel_order
                    )
                )
                if scale is None:
                    view = "signed, own scale"
                else:
                    view = "shared min-max" if mode == "minmax" else "signed, shared, 0 = grey"
                labels.append(f"{rule} ({view})\n{RULE_DESCRIPTIONS.get(rule, rule)}")
    columns = len(comparison.rules) + (image is not None)
    return contact_sheet(tiles, labels, columns=columns)
