"""The cascading-randomisation sanity check drawn: the input patch, then one projection per step.

Each row is one seed: first the image patch the unit looks at, then its projection after
each randomisation step, all cropped to the seed's receptive-field box (``full_frame``
shows the whole input instead) and scaled to one tile size, so a small field is not a
speck. Each projection has its own scale (randomised projections differ in magnitude by
orders) in the signed view, so zero is the same grey in every tile. Titles are wrapped to
their tile, never cut; a step where the unit no longer fires shows ``unit inactive``
instead of a black tile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from deconvnet.engine.receptive import Box
from deconvnet.figures.panels import stack
from deconvnet.figures.render import crop_box, to_display
from deconvnet.figures.style import (
    BACKGROUND,
    LINE_GAP,
    NO_DATA,
    PADDING,
    draw_text,
    text_image,
    text_size,
    wrap_text,
)
from deconvnet.instruments.sanity import STATUS_INACTIVE, SanityResult, SanityRow, SeedScore

MAX_FIGURE_STEPS = 8
"""The figure shows at most this many randomisation steps (evenly spread, both ends kept)."""
MAX_FIGURE_SEEDS = 4
"""Rows (seeds) drawn at most; the table and manifest keep every seed."""
MIN_TILE_SIDE = 160
"""Tiles smaller than this are upscaled (nearest, integer factor) until they reach it."""
MAX_TILE_SIDE = 320
"""Tiles larger than this are downscaled (bilinear) to it, so full frames of big photos fit."""
MAX_SKIPPED_NAMED = 4
"""The footer names this many of the layers left trained (the manifest lists them all)."""


@dataclass(frozen=True)
class SanityPanel:
    """One tile of the figure as drawn: its full title and its pixels."""

    title: str
    tile: np.ndarray
    inactive: bool


def shown_steps(count: int) -> list[int]:
    """Up to :data:`MAX_FIGURE_STEPS` of ``count`` steps, evenly spread, first and last kept."""
    if count <= MAX_FIGURE_STEPS:
        return list(range(count))
    return sorted(
        {round(i * (count - 1) / (MAX_FIGURE_STEPS - 1)) for i in range(MAX_FIGURE_STEPS)}
    )


def zoom_box(result: SanityResult, seed: int, image_hw: tuple[int, int]) -> Box:
    """The input box a seed's row shows: its receptive-field box (for joint selections the
    union over the seeded units), or the whole input when the layer has none."""
    box = result.boxes[seed]
    return box if box is not None else (0, 0, image_hw[0], image_hw[1])


def sanity_panels(
    result: SanityResult,
    image: np.ndarray | None = None,
    *,
    seed: int = 0,
    full_frame: bool = False,
    channel_order: Literal["RGB", "BGR"] = "RGB",
    names: Mapping[str, str] | None = None,
) -> list[SanityPanel]:
    """The tiles of one seed's row: the input patch (if ``image``, ``(H, W, 3)`` uint8 as the
    network saw it), then each shown step, all cropped to the same box and scaled alike."""
    height, width = (int(s) for s in result.projections.shape[-2:])
    box = (0, 0, height, width) if full_frame else zoom_box(result, seed, (height, width))
    panels = []
    if image is not None:
        patch = np.asarray(crop_box(image, box))
        whole = full_frame or result.boxes[seed] is None
        what = "input (whole frame)" if whole else f"input patch\n{_box_text(box)}"
        panels.append(SanityPanel(what, _scaled(patch), False))
    for step in shown_steps(len(result.rows)):
        row = result.rows[step]
        score = row.scores[seed]
        if score.active:
            crop = crop_box(result.projections[step, seed], box, channels_first=True)
            tile = _scaled(to_display(crop, "signed", channel_order=channel_order))
        else:
            tile = _inactive_tile(_scaled_shape(box))
        panels.append(SanityPanel(_title(row, score, names or {}), tile, not score.active))
    return panels


def sanity_figure(
    result: SanityResult,
    image: np.ndarray | None = None,
    *,
    full_frame: bool = False,
    channel_order: Literal["RGB", "BGR"] = "RGB",
    names: Mapping[str, str] | None = None,
) -> np.ndarray:
    """One row per seed (at most :data:`MAX_FIGURE_SEEDS`): the input patch, then the
    projection at the shown steps, each titled with its step and its own metrics.

    ``names`` maps module names to the names shown (e.g. a model's layer aliases).
    """
    shown = names or {}
    rows = [
        sanity_panels(
            result,
            image,
            seed=k,
            full_frame=full_frame,
            channel_order=channel_order,
            names=shown,
        )
        for k in range(min(len(result.seeds), MAX_FIGURE_SEEDS))
    ]
    drawn = [_draw_row(panels) for panels in rows]
    width = max(r.shape[1] for r in drawn)
    layer = shown.get(result.layer, result.layer)
    seeds = ", ".join(result.seeds[:MAX_FIGURE_SEEDS])
    more = len(result.seeds) - MAX_FIGURE_SEEDS
    seeds += f" (+{more} more in the manifest)" if more > 0 else ""
    view = "the whole input" if full_frame else "each seed's receptive field"
    header = (
        f"Cascading randomisation of {layer}, {seeds}: the layers it depends on re-initialised "
        f"from the top down, one more each step. Tiles show {view}; each projection on its "
        "own scale, zero = mid grey. Spearman and SSIM of |projection| against step 0, "
        "inside the receptive field."
    )
    parts = [_text_block(header, width), *drawn, _text_block(_skipped_text(result, shown), width)]
    return stack(parts)


def _title(row: SanityRow, score: SeedScore, names: Mapping[str, str]) -> str:
    if row.step == 0:
        what = "step 0: trained model"
        if score.active:
            return f"{what}\nthe reference for the scores"
    else:
        last = names.get(row.randomised[-1], row.randomised[-1])
        what = f"step {row.step}: randomised down to {last}"
    if not score.active:
        return f"{what}\n{STATUS_INACTIVE}"
    if score.spearman is None and score.ssim is None:
        return f"{what}\nno trained projection to compare"
    scores = f"Spearman {_number(score.spearman)}, SSIM {_number(score.ssim)}"
    same = f"\nsame as step {row.step - 1}" if row.same_as_previous else ""
    return f"{what}\n{scores}{same}"


def _number(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.2f}"


def _box_text(box: Box) -> str:
    top, left, bottom, right = box
    return f"y {top}-{bottom - 1}, x {left}-{right - 1}"


def _skipped_text(result: SanityResult, names: Mapping[str, str]) -> str:
    if not result.skipped:
        return "Every layer holding weights feeds this layer: none left trained."
    shown = [names.get(n, n) for n in result.skipped[:MAX_SKIPPED_NAMED]]
    rest = len(result.skipped) - len(shown)
    listed = ", ".join(shown) + (f" and {rest} more (see the manifest)" if rest > 0 else "")
    count = len(result.skipped)
    layers = "1 layer" if count == 1 else f"{count} layers"
    return (
        f"Left trained, because {names.get(result.layer, result.layer)} does not depend on "
        f"them (above it, or a branch that does not feed it): {layers}, {listed}."
    )


def _factor(side: int) -> float:
    """Scale factor of a tile whose longer side is ``side``."""
    if side < MIN_TILE_SIDE:
        return float(math.ceil(MIN_TILE_SIDE / side))
    return min(1.0, MAX_TILE_SIDE / side)


def _scaled_shape(box: Box) -> tuple[int, int]:
    height, width = box[2] - box[0], box[3] - box[1]
    factor = _factor(max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def _scaled(tile: np.ndarray) -> np.ndarray:
    """Nearest-neighbour upscaling of small tiles (integer factor), bilinear shrinking of big."""
    height, width = tile.shape[:2]
    factor = _factor(max(height, width))
    if factor >= 1:
        step = int(factor)
        return np.ascontiguousarray(tile.repeat(step, axis=0).repeat(step, axis=1))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(Image.fromarray(tile).resize(size, Image.Resampling.BILINEAR)).copy()


def _inactive_tile(shape: tuple[int, int]) -> np.ndarray:
    """A no-data tile that says the unit does not fire (where a black tile would mislead)."""
    canvas = np.empty((*shape, 3), dtype=np.uint8)
    canvas[...] = NO_DATA
    text = wrap_text(STATUS_INACTIVE, shape[1])
    text_w, text_h = text_size(text)
    draw_text(canvas, (shape[1] - text_w) // 2, (shape[0] - text_h) // 2, text)
    return canvas


def _draw_row(panels: Sequence[SanityPanel]) -> np.ndarray:
    """Tiles side by side under their wrapped titles; every title block equally tall."""
    titles = [wrap_text(p.title, p.tile.shape[1]) for p in panels]
    title_h = max(text_size(t)[1] for t in titles) + LINE_GAP
    tile_h = max(p.tile.shape[0] for p in panels)
    width = sum(p.tile.shape[1] for p in panels) + PADDING * (len(panels) + 1)
    canvas = np.empty((title_h + tile_h + 2 * PADDING, width, 3), dtype=np.uint8)
    canvas[...] = BACKGROUND
    left = PADDING
    for panel, title in zip(panels, titles, strict=True):
        draw_text(canvas, left, PADDING, title)
        top = PADDING + title_h
        canvas[top : top + panel.tile.shape[0], left : left + panel.tile.shape[1]] = panel.tile
        left += panel.tile.shape[1] + PADDING
    return canvas


def _text_block(text: str, width: int) -> np.ndarray:
    block = text_image(wrap_text(text, width - 2 * PADDING))
    canvas = np.empty((block.shape[0] + 2 * LINE_GAP, width, 3), dtype=np.uint8)
    canvas[...] = BACKGROUND
    canvas[LINE_GAP : LINE_GAP + block.shape[0], PADDING : PADDING + block.shape[1]] = block
    return canvas
