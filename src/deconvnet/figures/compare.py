"""The rule comparison drawn: each rule's projection of one selection, side by side.

Showing the rules on one shared scale (:func:`~deconvnet.figures.render.shared_range`)
makes their strengths comparable; the signed view puts zero at grey so negative evidence
shows; a last row gives each rule its own scale, so a weak rule's pattern stays visible.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from deconvnet.engine.rules import ACTIVATION_MODES, RULES
from deconvnet.figures.render import (
    DisplayMode,
    DisplayRange,
    contact_sheet,
    crop_box,
    shared_range,
    to_display,
)
from deconvnet.instruments.compare import Comparison


def seed_label(comparison: Comparison, k: int) -> str:
    """``map 12 @ (3, 4) = 5.1`` for selection ``k``."""
    channel = int(comparison.channels[k])
    what = f"map {channel}" if channel >= 0 else "joint"
    if comparison.positions is not None and comparison.positions.shape[-1] > 0:
        what += " @ (" + ", ".join(str(int(p)) for p in comparison.positions[k]) + ")"
    return f"{what} = {float(comparison.values[k]):.3g}"


def shown_projections(comparison: Comparison, full_frame: bool = False) -> Tensor:
    """The (R, K, C, h, w) projections as the figure shows them: cut to the zoom box."""
    if full_frame or comparison.zoom is None:
        return comparison.images
    return torch.as_tensor(crop_box(comparison.images, comparison.zoom, channels_first=True))


def comparison_figure(
    comparison: Comparison,
    image: np.ndarray | None = None,
    *,
    channel_order: Literal["RGB", "BGR"] = "RGB",
    full_frame: bool = False,
) -> np.ndarray:
    """A sheet: per selection, a row on the shared min-max scale, a signed row on the shared
    scale, and a signed row where each rule has its own scale.

    The shared rows compare magnitudes honestly (rules can differ by orders of magnitude,
    e.g. the deconvnet's ``relu`` lets through signals the forward mask would stop, and
    they cancel); the last row shows each rule's pattern even when its values are small.
    Columns are the input (if given) then one rule each; each tile says what it shows and,
    under the rule's name, what the rule does.
    """
    box = None if full_frame else comparison.zoom
    projections = shown_projections(comparison, full_frame)
    if box is not None and image is not None:
        image = np.asarray(crop_box(image, box))
    minmax = shared_range(list(projections), "minmax")
    signed = shared_range(list(projections), "signed")
    tiles: list[np.ndarray] = []
    labels: list[str] = []
    views: tuple[tuple[DisplayMode, DisplayRange | None], ...] = (
        ("minmax", minmax),
        ("signed", signed),
        ("signed", None),
    )
    caption = ACTIVATION_MODES[comparison.activations].caption
    note = f"\n{caption}" if caption else ""
    for k in range(comparison.images.shape[1]):
        for mode, scale in views:
            if image is not None:
                tiles.append(image)
                where = "receptive field" if box is not None else "input"
                labels.append(f"{where}\n{seed_label(comparison, k)}\n{comparison.layer}")
            for r, rule in enumerate(comparison.rules):
                tiles.append(
                    to_display(projections[r, k], mode, scale=scale, channel_order=channel_order)
                )
                if scale is None:
                    view = "signed, own scale"
                else:
                    view = "shared min-max" if mode == "minmax" else "signed, shared, 0 = grey"
                shown = "" if RULES[rule].is_gradient else note  # exact under any policy
                labels.append(f"{rule} ({view})\n{RULES[rule].description}{shown}")
    columns = len(comparison.rules) + (image is not None)
    return contact_sheet(tiles, labels, columns=columns)
