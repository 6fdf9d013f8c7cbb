"""Pictures of an occlusion run: the four panels of the paper's Fig. 7 and their legend."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
from torch import Tensor

from deconvnet.figures import panels
from deconvnet.figures.render import to_display
from deconvnet.figures.style import NO_DATA, OCCLUDER_COLOUR
from deconvnet.instruments.occlusion.occlusion import OcclusionResult
from deconvnet.models.naming import display_name

OUTSIDE = -1
"""Label of figure pixels that no occluder centre covers (the margins)."""


def figure_panels(
    result: OcclusionResult,
    image: np.ndarray,
    categories: Sequence[str] | None = None,
    *,
    channel_order: Literal["RGB", "BGR"] = "RGB",
    aliases: Mapping[str, str] | None = None,
    map_name: str | None = None,
) -> dict[str, np.ndarray]:
    """The panels of Fig. 7 as uint8 RGB images: ``input``, ``activation``, ``projection``,
    ``probability``, ``label`` (each titled), plus ``legend``.

    ``image`` is the ``(H, W, 3)`` uint8 picture the network saw (see
    :func:`deconvnet.inputs.images.resized_rgb`); ``categories`` name the classes;
    ``aliases`` (the model's) name the layer as everywhere else; ``map_name`` names the
    map when the layer's maps are classes (SqueezeNet's ``relu10``).
    """
    layer = display_name(aliases or {}, result.layer)
    unit = f"map {result.channel}" + (f" ({map_name})" if map_name else "")
    names = _namer(categories)
    top, left = _strongest_spot(result)
    size = result.occluder.size
    shown = panels.resize_panel(
        panels.outline(image, (top, left, top + size, left + size), OCCLUDER_COLOUR, 1),
        smooth=True,
    )
    activation = _centred(result, result.activation, image.shape[:2])
    probability = _centred(result, result.probability, image.shape[:2])
    labels = result.top_class.numpy()
    colours = panels.label_colours(labels)
    entries = legend_entries(result, categories)
    colours[OUTSIDE] = NO_DATA
    label_map = _centred(result, result.top_class, image.shape[:2])
    side = panels.PANEL_SIDE
    projection = to_display(result.projection, "minmax", channel_order=channel_order)
    target = names(result.target)
    which = "true" if result.target_is_label else "top"
    return {
        "input": panels.titled(
            shown,
            f"(a) input {image.shape[1]}x{image.shape[0]}\n"
            f"occluder {size}px, stride {result.occluder.stride}",
        ),
        "activation": panels.titled(
            panels.resize_panel(panels.colormap(activation)),
            f"(b) {layer} {unit}: total\n"
            f"activation (unoccluded {result.baseline_activation:.3g})",
            panels.colour_bar(float(result.activation.min()), float(result.activation.max()), side),
        ),
        "projection": panels.titled(
            panels.resize_panel(projection, smooth=False),
            f"(c) projection of {unit}\n(its max, unoccluded image)",
        ),
        "probability": panels.titled(
            panels.resize_panel(panels.colormap(probability, 0.0, 1.0)),
            f"(d) p({target}) [{which} class]\n(unoccluded {result.baseline_probability:.3f})",
            panels.colour_bar(0.0, 1.0, side),
        ),
        "label": panels.titled(
            panels.resize_panel(
                panels.label_image(np.nan_to_num(label_map, nan=OUTSIDE).astype(np.int64), colours)
            ),
            f"(e) most probable class\n(unoccluded: {names(result.baseline_class)})",
        ),
        "legend": panels.legend(entries, side),
    }


def figure(
    result: OcclusionResult,
    image: np.ndarray,
    categories: Sequence[str] | None = None,
    *,
    channel_order: Literal["RGB", "BGR"] = "RGB",
    aliases: Mapping[str, str] | None = None,
    fill_label: str | None = None,
    map_name: str | None = None,
) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 figure: panels (a)–(e) in a row, the class legend under (e).

    ``fill_label`` says what the occluder was filled with, in pixels (``"the mean pixel,
    RGB 124, 116, 104"``); without it the fill is given in the network's input units."""
    drawn = figure_panels(
        result, image, categories, channel_order=channel_order, aliases=aliases, map_name=map_name
    )
    label_column = panels.stack([drawn["label"], drawn["legend"]])
    filled = fill_label or (
        "fill " + ", ".join(f"{v:.3g}" for v in result.fill) + " in the network's input units"
    )
    size = result.occluder.size
    caption = (
        f"occlusion: a {size}x{size} px square filled with {filled}, at "
        f"{result.rows.numel()}x{result.cols.numel()} positions (stride "
        f"{result.occluder.stride} px); method {result.method}"
        + (
            f", spliced at {display_name(aliases or {}, result.splice_layer)}"
            if result.splice_layer
            else ""
        )
    )
    return panels.row(
        [drawn[k] for k in ("input", "activation", "projection", "probability")] + [label_column],
        caption,
    )


def legend_entries(
    result: OcclusionResult, categories: Sequence[str] | None = None
) -> list[tuple[tuple[int, int, int], str]]:
    """Panel (e)'s legend: ``(colour, "name (share of positions)")``, most frequent first."""
    names = _namer(categories)
    labels = result.top_class.numpy()
    colours = panels.label_colours(labels)
    counts = {c: int((labels == c).sum()) for c in colours}
    ordered = sorted(counts, key=lambda c: -counts[c])[: len(panels.LABEL_PALETTE)]
    return [(colours[c], f"{names(c)} ({100 * counts[c] / labels.size:.0f}%)") for c in ordered]


def _centred(result: OcclusionResult, values: Tensor, image_hw: tuple[int, ...]) -> np.ndarray:
    """Each position's value drawn as a stride-sized cell at the occluder's centre, so the
    maps line up with the input; NaN where no occluder centre falls (the margins)."""
    canvas = np.full(image_hw[:2], np.nan)
    step, half = result.occluder.stride, result.occluder.size // 2
    data = values.double().numpy()
    for i, top in enumerate(result.rows.tolist()):
        for j, left in enumerate(result.cols.tolist()):
            y, x = top + half - step // 2, left + half - step // 2
            canvas[max(y, 0) : y + step, max(x, 0) : x + step] = data[i, j]
    return canvas


def _namer(categories: Sequence[str] | None) -> Callable[[int], str]:
    def name(index: int) -> str:
        if categories is not None and 0 <= index < len(categories):
            return f"{categories[index].split(',')[0]}"
        return f"class {index}"

    return name


def _strongest_spot(result: OcclusionResult) -> tuple[int, int]:
    """The occluder position that lowers the target probability most (shown in (a))."""
    flat = int(result.probability.argmin())
    row, col = divmod(flat, result.cols.numel())
    return int(result.rows[row]), int(result.cols[col])
