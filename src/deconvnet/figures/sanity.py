"""The cascading-randomisation sanity check drawn: one projection per step, with its metrics."""

from __future__ import annotations

from typing import Literal

import numpy as np

from deconvnet.figures import panels
from deconvnet.figures.render import to_display
from deconvnet.instruments.sanity import SanityResult

MAX_FIGURE_STEPS = 8
"""The figure shows at most this many randomisation steps (evenly spread, last included)."""


def sanity_figure(
    result: SanityResult, *, channel_order: Literal["RGB", "BGR"] = "RGB"
) -> np.ndarray:
    """The first seed's projection at chosen steps, each titled with its metrics."""
    count = len(result.rows)
    chosen = (
        sorted({round(i * (count - 1) / (MAX_FIGURE_STEPS - 1)) for i in range(MAX_FIGURE_STEPS)})
        if count > MAX_FIGURE_STEPS
        else list(range(count))
    )
    shown = []
    for step in chosen:
        row = result.rows[step]
        tile = to_display(result.projections[step, 0], "minmax", channel_order=channel_order)
        last = row.randomised[-1] if row.randomised else "none (trained)"
        title = f"step {step}: down to {last}\nspearman {row.spearman:.2f}  ssim {row.ssim:.2f}"
        shown.append(panels.titled(panels.resize_panel(tile, 160), title))
    caption = f"cascading randomisation of {result.layer} {result.seeds[0]} (top layer first)"
    return panels.row(shown, caption)
