"""The paper's Fig. 5 drawn: distance per layer and class probability against the amount.

One row of matplotlib line charts (Agg, on a private figure, so pyplot's state is never
touched): one chart per layer with the normalised feature distance (see
:mod:`deconvnet.instruments.invariance`), then the probability of each image's true (or
top) class; one line per image, in the same colour in every chart. Above them, a strip of
one image at a few amounts, as the network saw it, shows what the transform does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deconvnet.figures import panels
from deconvnet.figures.style import (
    DPI,
    FONT_FAMILY,
    FONT_SIZE,
    MAX_LEVEL,
    PADDING,
    TITLE_FONT_SIZE,
    rendered,
    text_image,
    wrap_text,
)
from deconvnet.instruments.invariance import InvarianceResult

CHART_WIDTH = 300
CHART_HEIGHT = 250
LEGEND_HEIGHT = 22
"""Height per legend row under the charts."""
PREVIEW_SIDE = 112
MAX_PREVIEWS = 7
"""Pictures in the strip above the charts (evenly spread over the amounts)."""
AXIS_LABELS = {
    "translate": "vertical shift (pixels, + = down)",
    "scale": "scale factor",
    "rotate": "rotation (degrees, counter-clockwise)",
}


def invariance_chart(
    result: InvarianceResult,
    image_names: Sequence[str],
    *,
    class_names: Sequence[str] | None = None,
    display_names: Mapping[str, str] | None = None,
) -> np.ndarray:
    """``(H, W, 3)`` uint8: one chart per layer, then the probability chart, and a legend."""
    names = display_names or {}
    count = len(result.layers) + 1
    legend_rows = -(-len(image_names) // 3)
    height = CHART_HEIGHT + legend_rows * LEGEND_HEIGHT
    figure = Figure(figsize=(count * CHART_WIDTH / DPI, height / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(1, count, squeeze=False)[0]
    amounts = np.asarray(result.amounts)
    for k, layer in enumerate(result.layers):
        values = result.distance[layer].numpy()
        for n in range(values.shape[0]):
            axes[k].plot(amounts, values[n], marker="o", markersize=3, color=_colour(n))
        title = f"{names.get(layer, layer)} ({result.feature_sizes[layer]:,} values)"
        _style(axes[k], title, AXIS_LABELS[result.transform], "normalised distance")
        axes[k].set_ylim(bottom=0)
    probability = result.probability.numpy()
    lines = []
    for n in range(probability.shape[0]):
        (line,) = axes[-1].plot(amounts, probability[n], marker="o", markersize=3, color=_colour(n))
        lines.append(line)
    which = "true" if all(result.target_is_label) else "true or top"
    _style(axes[-1], f"p({which} class)", AXIS_LABELS[result.transform], "probability")
    axes[-1].set_ylim(-0.02, 1.02)
    labels = [
        _legend_label(name, result.targets[n], class_names) for n, name in enumerate(image_names)
    ]
    figure.legend(
        lines,
        labels,
        loc="lower center",
        ncol=3,
        frameon=False,
        prop={"family": FONT_FAMILY, "size": FONT_SIZE - 1},
    )
    figure.subplots_adjust(
        left=0.06,
        right=0.99,
        top=0.9,
        bottom=(legend_rows * LEGEND_HEIGHT + 45) / height,
        wspace=0.3,
    )
    return rendered(canvas)[..., :3].copy()


def invariance_figure(
    result: InvarianceResult,
    image_names: Sequence[str],
    previews: Sequence[np.ndarray] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    display_names: Mapping[str, str] | None = None,
) -> np.ndarray:
    """The chart row under a title and (if ``previews``, one picture per amount of the first
    image) a strip of that image at up to :data:`MAX_PREVIEWS` amounts."""
    chart = invariance_chart(
        result, image_names, class_names=class_names, display_names=display_names
    )
    rows = []
    title = wrap_text(
        f"{result.transform}: distance between the features of each image and of its "
        f"transformed copy, and the class probability ({len(image_names)} images; canvas "
        f"{result.canvas})",
        chart.shape[1] - 2 * PADDING,
        TITLE_FONT_SIZE,
    )
    rows.append(panels.row([text_image(title, TITLE_FONT_SIZE)]))
    if previews:
        shown = _spread(len(previews))
        tiles = [
            panels.captioned(
                panels.resize_panel(previews[i], PREVIEW_SIDE, smooth=True),
                amount_label(result.transform, result.amounts[i]),
            )
            for i in shown
        ]
        rows.append(panels.row(tiles, f"{image_names[0]}, as the network sees it"))
    rows.append(chart)
    return panels.stack(rows)


def amount_label(transform: str, amount: float) -> str:
    """``+20 px``, ``x1.3``, ``60°``: an amount as the preview strip names it."""
    if transform == "translate":
        return f"{amount:+g} px"
    if transform == "scale":
        return f"×{amount:g}"
    return f"{amount:g}°"


def _spread(count: int) -> list[int]:
    if count <= MAX_PREVIEWS:
        return list(range(count))
    return sorted({round(i * (count - 1) / (MAX_PREVIEWS - 1)) for i in range(MAX_PREVIEWS)})


def _legend_label(name: str, target: int, class_names: Sequence[str] | None) -> str:
    cls = class_names[target].split(",")[0] if class_names else f"class {target}"
    return f"{name} ({cls})"


def _colour(index: int) -> tuple[float, ...]:
    """The figures' label palette, as matplotlib colours; it repeats after twelve lines."""
    return tuple(c / MAX_LEVEL for c in panels.LABEL_PALETTE[index % len(panels.LABEL_PALETTE)])


def _style(axes: Axes, title: str, xlabel: str, ylabel: str) -> None:
    """Titles and labels in the figures' font and sizes, a light grid."""
    axes.set_title(title, fontsize=FONT_SIZE, family=FONT_FAMILY)
    axes.set_xlabel(xlabel, fontsize=FONT_SIZE - 1, family=FONT_FAMILY)
    axes.set_ylabel(ylabel, fontsize=FONT_SIZE - 1, family=FONT_FAMILY)
    axes.tick_params(labelsize=FONT_SIZE - 2)
    axes.grid(True, color="0.9")
