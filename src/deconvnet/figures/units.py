"""A unit page's charts: its top classes by mean activation and the distribution of its
per-image maximum (matplotlib, Agg, on private figures: pyplot's state is never touched).

Each chart is a small ``(H, W, 4)`` picture sized for a unit page (a few kB as PNG); the
numbers it draws are those of the instrument's dataclass, which the page and
``units/<map>.json`` show as well.
"""

from __future__ import annotations

import bisect

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deconvnet.figures.style import DPI, FONT_FAMILY, FONT_SIZE, rendered
from deconvnet.instruments.units import ClassSelectivity, Distribution, bin_centre

CHART_WIDTH = 380
CHART_HEIGHT = 210
TOP_CLASSES = 8
"""Bars in the selectivity chart: the classes with the largest means."""
BAR_COLOUR = "#3b6ea5"
TOP_COLOUR = "#c0392b"
"""The unit's top-k values on the distribution, and its top class's bar."""
MEDIAN_COLOUR = "#555555"
TICKS = 5


def selectivity_chart(selectivity: ClassSelectivity, *, top: int = TOP_CLASSES) -> np.ndarray:
    """Horizontal bars: the ``top`` classes by mean per-image maximum, the strongest first
    (in red), titled with the selectivity index, μ_top and μ_rest."""
    shown = list(selectivity.ranking[:top])
    means = [selectivity.means[number] or 0.0 for number in shown]
    figure, axes = _figure(height=CHART_HEIGHT + 6 * max(0, len(shown) - TOP_CLASSES))
    rows = np.arange(len(shown))[::-1]
    colours = [TOP_COLOUR if n == 0 else BAR_COLOUR for n in range(len(shown))]
    axes.barh(rows, means, color=colours, height=0.7)
    axes.set_yticks(rows, [_short(selectivity.names[number]) for number in shown])
    index = "undefined" if selectivity.index is None else f"{selectivity.index:.2f}"
    axes.set_title(
        f"selectivity {index} (μ_top {selectivity.mu_top:.3g}, μ_rest "
        f"{selectivity.mu_rest:.3g})",
        fontsize=FONT_SIZE,
        family=FONT_FAMILY,
    )
    axes.set_xlabel("mean of the map's maximum per image", fontsize=FONT_SIZE - 2)
    axes.tick_params(labelsize=FONT_SIZE - 2)
    return _pixels(figure)


def distribution_chart(dist: Distribution) -> np.ndarray:
    """Bars per occupied histogram bin (x: the per-image maximum, log-spaced bins), the
    median as a dashed line and each top-k value as a red tick above the bars."""
    figure, axes = _figure()
    occupied = [number for number, count in enumerate(dist.counts) if count]
    if not occupied:
        axes.text(0.5, 0.5, "no images", ha="center", va="center", transform=axes.transAxes)
        return _pixels(figure)
    first, last = occupied[0], occupied[-1]
    span = range(first, last + 1)
    axes.bar(list(span), [dist.counts[n] for n in span], width=0.9, color=BAR_COLOUR)
    tallest = max(dist.counts)
    for value in dist.top_values:
        axes.plot(
            [_position(dist, value)] * 2,
            [tallest * 1.02, tallest * 1.12],
            color=TOP_COLOUR,
            linewidth=1.5,
        )
    if dist.median is not None:
        axes.axvline(_position(dist, dist.median), color=MEDIAN_COLOUR, linestyle="--", linewidth=1)
    step = max(1, len(span) // TICKS)
    ticks = list(span)[::step]
    axes.set_xticks(ticks, [f"{bin_centre(dist.edges, n):.3g}" for n in ticks])
    axes.set_xlim(first - 0.8, last + 0.8)
    axes.set_ylim(0, tallest * 1.18)
    axes.set_title(
        f"the map's maximum in each of {dist.images} images",
        fontsize=FONT_SIZE,
        family=FONT_FAMILY,
    )
    axes.set_xlabel("map maximum (log bins); dashed: median; red: top-k", fontsize=FONT_SIZE - 2)
    axes.set_ylabel("images", fontsize=FONT_SIZE - 2)
    axes.tick_params(labelsize=FONT_SIZE - 2)
    return _pixels(figure)


def _figure(height: int = CHART_HEIGHT) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(CHART_WIDTH / DPI, height / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    return figure, axes


def _pixels(figure: Figure) -> np.ndarray:
    figure.tight_layout(pad=0.4)
    canvas = figure.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    return rendered(canvas)[..., :3]


def _position(dist: Distribution, value: float) -> float:
    """The bin index holding ``value`` (the chart's x axis counts bins)."""
    return float(bisect.bisect_right(dist.edges, value))


def _short(name: str, width: int = 22) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"
