"""The faithfulness card drawn, the layer summary drawn, and both as JSON records.

:func:`card_figure`: one chart per perturbation (deletion by the mean pixel, deletion by a
blurred copy, insertion into a blurred copy), the unit's activation divided by its value
on the untouched image against the share of its receptive field moved, averaged over the
images where it fires; one line per rule and a dashed grey line for the random order; the
legend gives each curve's area and gain over random. :func:`layers_figure`: per
perturbation, each rule's median gain over random across the units of a layer, layer by
layer, with the share of units whose gain is positive in a strip under the lines.
:func:`card_record` and :func:`summary_record` hold the same numbers (and every curve) for
JSON files and unit pages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deconvnet.engine.rules import RULES
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
from deconvnet.instruments.faithfulness import (
    PERTURBATIONS,
    RANDOM_ORDER,
    FaithfulnessCard,
    ImageCurves,
    LayerFaithfulness,
)
from deconvnet.instruments.unit_sanity import UnitSanity

CHART_WIDTH = 330
CHART_HEIGHT = 260
LEGEND_ROW = 18
RANDOM_COLOUR = (0.45, 0.45, 0.45)
AXIS_LABELS = {True: "share of the receptive field deleted", False: "share inserted"}


def rule_colour(rule: str) -> tuple[float, ...]:
    """A rule's colour in every chart: its place in the rule table, in the label palette."""
    index = list(RULES).index(rule) if rule in RULES else len(RULES)
    return tuple(c / MAX_LEVEL for c in panels.LABEL_PALETTE[index % len(panels.LABEL_PALETTE)])


def card_figure(
    card: FaithfulnessCard,
    *,
    display_name: str | None = None,
    sanity: UnitSanity | None = None,
) -> np.ndarray:
    """``(H, W, 3)`` uint8: a title, the three charts, and (if given) the sanity scores."""
    layer = display_name or card.layer
    active = card.active_images
    rows = []
    title = (
        f"{layer} map {card.map}: the unit's activation as its receptive field's pixels are "
        f"moved in each rule's order ({len(active)} of {len(card.images)} images where it fires)"
    )
    chart = _card_charts(card)
    rows.append(
        panels.row(
            [
                text_image(
                    wrap_text(title, chart.shape[1] - 2 * PADDING, TITLE_FONT_SIZE), TITLE_FONT_SIZE
                )
            ]
        )
    )
    rows.append(chart)
    if sanity is not None:
        rows.append(
            panels.row([text_image(wrap_text(sanity_line(sanity), chart.shape[1] - 2 * PADDING))])
        )
    return panels.stack(rows)


def sanity_line(sanity: UnitSanity) -> str:
    """Per rule, the similarity to the trained projection at the deepest randomisation step
    where the unit still fires (lower: the picture depends on the weights)."""
    parts = []
    for rule in sanity.steps:
        final = sanity.final(rule)
        scored = sanity.last_scored(rule)
        if scored is None:
            parts.append(f"{rule}: {final.status} once randomised")
            continue
        ssim = "–" if scored.ssim is None else f"{scored.ssim:.2f}"
        text = f"{rule}: spearman {scored.spearman:.2f}, ssim {ssim}"
        if scored is not final:
            text += f" ({scored.randomised} of {final.randomised} layers; then {final.status})"
        parts.append(text)
    total = sanity.final(next(iter(sanity.steps))).randomised
    return (
        f"sanity, {total} layers randomised top-down (lower: depends on the weights) — "
        + "; ".join(parts)
    )


def _card_charts(card: FaithfulnessCard) -> np.ndarray:
    count = len(PERTURBATIONS)
    legend_rows = len(card.settings.orders)
    height = CHART_HEIGHT + legend_rows * LEGEND_ROW
    figure = Figure(figsize=(count * CHART_WIDTH / DPI, height / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(1, count, squeeze=False)[0]
    curves = card.mean_curves()
    fractions = card.settings.fractions()
    auc, gain = card.auc, card.gain
    for ax, (name, perturbation) in zip(axes, PERTURBATIONS.items(), strict=True):
        _style(ax, name, AXIS_LABELS[perturbation.deletes], "activation / untouched")
        if not curves:
            ax.text(
                0.5,
                0.5,
                "the unit fires in none of the images",
                ha="center",
                transform=ax.transAxes,
                fontsize=FONT_SIZE - 1,
                family=FONT_FAMILY,
            )
            continue
        lines, labels = [], []
        for order in card.settings.orders:
            random = order == RANDOM_ORDER
            (line,) = ax.plot(
                fractions,
                curves[name][order],
                color=RANDOM_COLOUR if random else rule_colour(order),
                linestyle="--" if random else "-",
                marker=None if random else "o",
                markersize=2.5,
            )
            lines.append(line)
            area = _number(auc[name][order])
            extra = "" if random else f", gain {_signed(gain[name][order])}"
            label = f"random ({card.settings.random_seeds} seeds)" if random else order
            labels.append(f"{label}: AUC {area}{extra}")
        ax.axhline(0, color="0.6", linewidth=0.8)
        ax.legend(
            lines,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            frameon=False,
            prop={"family": FONT_FAMILY, "size": FONT_SIZE - 2},
        )
    figure.subplots_adjust(
        left=0.07, right=0.99, top=0.9, bottom=(legend_rows * LEGEND_ROW + 50) / height, wspace=0.3
    )
    return rendered(canvas)[..., :3].copy()


def layers_figure(
    summary: Sequence[LayerFaithfulness],
    *,
    display_names: Mapping[str, str] | None = None,
    title: str | None = None,
) -> np.ndarray:
    """``(H, W, 3)`` uint8: per perturbation, each rule's median gain over random, layer by
    layer; under the lines, the share of units whose gain is positive."""
    names = display_names or {}
    count = len(PERTURBATIONS)
    rules = _rules(summary)
    height = CHART_HEIGHT + 40 + len(rules) * LEGEND_ROW
    width_each = max(CHART_WIDTH, 70 * len(summary) + 110)
    figure = Figure(figsize=(count * width_each / DPI, height / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(1, count, squeeze=False)[0]
    positions = np.arange(len(summary))
    labels = [f"{names.get(s.layer, s.layer)}\n({s.units} units)" for s in summary]
    lines = []
    for ax, name in zip(axes, PERTURBATIONS, strict=True):
        _style(ax, name, "", "median gain over random")
        ax.axhline(0, color="0.4", linewidth=1)
        values = {r: [_nan(s.median_gain[name].get(r)) for s in summary] for r in rules}
        for rule in rules:
            (line,) = ax.plot(
                positions, values[rule], marker="o", color=rule_colour(rule), label=rule
            )
            if ax is axes[0]:
                lines.append(line)
        _share_strip(ax, summary, name, rules, values)
        ax.set_xticks(positions, labels, fontsize=FONT_SIZE - 3, family=FONT_FAMILY)
        ax.margins(x=0.12)
    figure.legend(
        lines,
        [f"{RULES[r].title if r in RULES else r} ({r})" for r in rules],
        loc="lower center",
        ncol=len(rules),
        frameon=False,
        prop={"family": FONT_FAMILY, "size": FONT_SIZE - 1},
    )
    figure.subplots_adjust(
        left=0.06, right=0.99, top=0.9, bottom=(LEGEND_ROW + 70) / height, wspace=0.28
    )
    chart = rendered(canvas)[..., :3].copy()
    heading = title or (
        "Faithfulness by depth: median gain of each rule's pixel order over a random order "
        "(under the lines: the share of units whose gain is positive)"
    )
    top = panels.row(
        [
            text_image(
                wrap_text(heading, chart.shape[1] - 2 * PADDING, TITLE_FONT_SIZE), TITLE_FONT_SIZE
            )
        ]
    )
    return panels.stack([top, chart])


def _share_strip(
    ax: Axes,
    summary: Sequence[LayerFaithfulness],
    name: str,
    rules: Sequence[str],
    values: Mapping[str, Sequence[float]],
) -> None:
    """Under the lines, one row per rule: the share of each layer's units whose gain is
    positive, in the rule's colour (room made below the lowest point)."""
    found = [v for row in values.values() for v in row if np.isfinite(v)] or [0.0]
    low, high = min(0.0, *found), max(0.0, *found)
    span = (high - low) or 1.0
    rows = len(rules)
    ax.set_ylim(low - span * (0.1 + 0.13 * rows) / (1 - 0.08 * rows), high + 0.1 * span)
    for number, rule in enumerate(reversed(rules)):
        for x, s in enumerate(summary):
            share = s.positive[name].get(rule)
            ax.annotate(
                "–" if share is None else f"{share:.0%}",
                (x, 0.025 + 0.075 * number),
                xycoords=("data", "axes fraction"),
                ha="center",
                fontsize=FONT_SIZE - 3,
                color=rule_colour(rule),
                family=FONT_FAMILY,
            )


def card_record(card: FaithfulnessCard, *, display_name: str | None = None) -> dict[str, Any]:
    """The card as plain JSON values: settings, per rule the mean areas and gains, and per
    image every curve (raw activations) with its own numbers."""
    return {
        "layer": card.layer,
        "layer_alias": display_name,
        "map": card.map,
        "settings": {
            "steps": card.settings.steps,
            "random_seeds": card.settings.random_seeds,
            "rules": list(card.settings.rules),
            "blur_sigma": card.settings.blur_sigma,
            "seed": card.settings.seed,
            "order": "pixels by decreasing |projection| summed over channels; ties in one "
            "fixed random order (seed); random orders seeds seed+1 ...",
        },
        "perturbations": {name: p.description for name, p in PERTURBATIONS.items()},
        "fractions": card.settings.fractions().tolist(),
        "images_active": len(card.active_images),
        "cached": card.cached,
        "auc": card.auc,
        "gain": card.gain,
        "images": [_image_record(image) for image in card.images],
    }


def summary_record(summary: Sequence[LayerFaithfulness]) -> list[dict[str, Any]]:
    """Per layer: units, and per perturbation and rule the median gain, share positive and
    median area."""
    return [
        {
            "layer": s.layer,
            "units": s.units,
            "median_gain": s.median_gain,
            "positive": s.positive,
            "median_auc": s.median_auc,
        }
        for s in summary
    ]


def _image_record(image: ImageCurves) -> dict[str, Any]:
    return {
        "image": image.name,
        "position": list(image.position),
        "box": list(image.box),
        "pixels": image.pixels,
        "activation": image.activation,
        "scan_value": image.expected,
        "crop": list(image.crop) if image.crop is not None else None,
        "auc": image.auc,
        "gain": image.gain,
        "curves": {
            p: {o: c.tolist() for o, c in orders.items()} for p, orders in image.curves.items()
        },
        "random_curves": {p: c.tolist() for p, c in image.random_curves.items()},
    }


def _rules(summary: Sequence[LayerFaithfulness]) -> list[str]:
    seen: dict[str, None] = {}
    for s in summary:
        for gains in s.median_gain.values():
            seen.update(dict.fromkeys(gains))
    return list(seen)


def _style(axes: Axes, title: str, xlabel: str, ylabel: str) -> None:
    axes.set_title(title, fontsize=FONT_SIZE, family=FONT_FAMILY)
    axes.set_xlabel(xlabel, fontsize=FONT_SIZE - 1, family=FONT_FAMILY)
    axes.set_ylabel(ylabel, fontsize=FONT_SIZE - 1, family=FONT_FAMILY)
    axes.tick_params(labelsize=FONT_SIZE - 2)
    axes.grid(True, color="0.9")


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"
