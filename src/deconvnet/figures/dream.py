"""Optimised images drawn (one tile per unit) and kept as JSON records.

Each tile is the whole optimised image (upscaled, nearest, so pixels stay pixels) with the
centre unit's receptive field outlined for the ``neuron`` objective, then (when it is
smaller than most of the image) that field cropped and enlarged, under a caption with the
final activation and the dataset's top-1; an image that does not beat the top-1 is
captioned in red. Under the tiles, a chart of every unit's objective over the steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deconvnet.figures import panels
from deconvnet.figures.style import (
    BOX_COLOUR,
    DPI,
    FONT_FAMILY,
    FONT_SIZE,
    MAX_LEVEL,
    PADDING,
    TEXT,
    TITLE_FONT_SIZE,
    rendered,
    text_image,
    wrap_text,
)
from deconvnet.instruments.dream import OBJECTIVES, DreamResult

TILE_SIDE = 192
"""Side of each image tile (its longer side)."""
FLAG_COLOUR = (200, 0, 0)
CHART_HEIGHT = 220
CROP_SHOWN_BELOW = 0.6
"""The receptive field is shown enlarged beside the image when it covers less than this
share of it (a field that covers most of the image would repeat it)."""
PER_ROW = 4
MIN_WIDTH = 560
"""Narrowest figure (one unit's tile is narrower than the chart's title)."""


def dream_figure(results: Sequence[DreamResult], *, display_name: str | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8: a title, the tiles (four to a row) and the trajectories."""
    if not results:
        raise ValueError("dream_figure needs at least one result")
    first = results[0]
    layer = display_name or first.layer
    tiles = [_tile(result) for result in results]
    rows = [panels.row(tiles[i : i + PER_ROW]) for i in range(0, len(tiles), PER_ROW)]
    width = max(MIN_WIDTH, *(r.shape[1] for r in rows))
    title = (
        f"{layer}: images optimised for {OBJECTIVES[first.settings.objective]} "
        f"({first.settings.steps} Adam steps, Fourier parameterisation, jitter/scale/rotation)"
    )
    heading = panels.row(
        [text_image(wrap_text(title, width - 2 * PADDING, TITLE_FONT_SIZE), TITLE_FONT_SIZE)]
    )
    return panels.stack([heading, *rows, _trajectories(results, width)])


def dream_record(result: DreamResult, *, image_file: str | None = None) -> dict[str, Any]:
    """One unit's result as plain JSON values (the trajectory included)."""
    return {
        "layer": result.layer,
        "map": result.map,
        "objective": result.settings.objective,
        "settings": result.settings.record(),
        "activation": result.activation,
        "centre": result.centre,
        "mean": result.mean,
        "peak": result.peak,
        "position": list(result.position),
        "field_box": list(result.box) if result.box is not None else None,
        "jitter": result.jitter,
        "dataset_top1": result.dataset_top1,
        "compared": result.compared,
        "beats_dataset": result.beats_dataset,
        "trajectory": list(result.trajectory),
        "seconds": result.seconds,
        "cached": result.cached,
        "cache_key": result.key,
        "image_file": image_file,
    }


def _tile(result: DreamResult) -> np.ndarray:
    whole = panels.resize_panel(result.image, TILE_SIDE)
    pictures = [whole]
    if result.box is not None and result.settings.objective == "neuron":
        height, width = result.image.shape[:2]
        top, left, bottom, right = result.box
        top, left = max(top, 0), max(left, 0)
        bottom, right = min(bottom, height), min(right, width)
        factor = whole.shape[0] / height
        scaled = (
            round(top * factor),
            round(left * factor),
            round(bottom * factor),
            round(right * factor),
        )
        pictures[0] = panels.outline(whole, scaled, BOX_COLOUR)
        if (bottom - top) * (right - left) <= CROP_SHOWN_BELOW * height * width:
            crop = result.image[top:bottom, left:right].copy()
            pictures.append(panels.resize_panel(crop, TILE_SIDE))
    beside = panels.row(pictures)
    caption = f"map {result.map}: {result.compared:.3g}"
    colour = TEXT if result.beats_dataset is not False else FLAG_COLOUR
    if result.dataset_top1 is not None:
        verdict = "above" if result.beats_dataset else "NOT above"
        caption += f", {verdict} the dataset's top-1 {result.dataset_top1:.3g}"
    return panels.stack([text_image(caption, colour=colour), beside])


def _trajectories(results: Sequence[DreamResult], width: int) -> np.ndarray:
    figure = Figure(figsize=(width / DPI, CHART_HEIGHT / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots()
    for index, result in enumerate(results):
        colour = tuple(
            c / MAX_LEVEL for c in panels.LABEL_PALETTE[index % len(panels.LABEL_PALETTE)]
        )
        axes.plot(result.trajectory, color=colour, linewidth=1, label=f"map {result.map}")
        if result.dataset_top1 is not None:
            axes.axhline(result.dataset_top1, color=colour, linestyle=":", linewidth=1)
    axes.set_xlabel("step", fontsize=FONT_SIZE - 1, family=FONT_FAMILY)
    axes.set_ylabel("objective (jittered image)", fontsize=FONT_SIZE - 1, family=FONT_FAMILY)
    axes.set_title(
        "objective per step (dotted: each unit's dataset top-1)",
        fontsize=FONT_SIZE,
        family=FONT_FAMILY,
    )
    axes.tick_params(labelsize=FONT_SIZE - 2)
    axes.grid(True, color="0.9")
    if len(results) <= 12:
        axes.legend(frameon=False, prop={"family": FONT_FAMILY, "size": FONT_SIZE - 3}, ncol=4)
    figure.subplots_adjust(left=0.08, right=0.99, top=0.86, bottom=0.2)
    return rendered(canvas)[..., :3].copy()
