"""A map's tuning drawn: its orientation tuning curve (polar), the best grating as it was
fed, and its colour preference (the best colour field's swatch and the response per hue).

matplotlib on a private Agg figure (pyplot's state is never touched); PNG + JSON beside it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deconvnet.figures.files import save_png, write_json
from deconvnet.figures.style import DPI, FONT_FAMILY, FONT_SIZE, MAX_LEVEL, rendered
from deconvnet.instruments.tuning import UnitTuning, hsv_rgb

WIDTH = 900
HEIGHT = 330
LINE = "#1f5fa8"
CYCLES_SHOWN = 6
MIN_CROP = 32
"""The best grating is shown as a central crop of about six cycles, at least this side."""


def tuning_figure(unit: UnitTuning) -> np.ndarray:
    """``(H, W, 3)`` uint8: polar tuning curve | best grating | colour swatch and hue curve."""
    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    polar = figure.add_axes((0.03, 0.08, 0.27, 0.68), projection="polar")
    # orientation is axial: theta and theta + 180 are the same stimulus
    angles = [math.radians(a) for a in unit.orientations]
    both = angles + [a + math.pi for a in angles]
    curve = [max(v, 0.0) for v in unit.curve]
    closed = [*both, both[0]]
    values = [*curve, *curve, curve[0]]
    polar.plot(closed, values, color=LINE, linewidth=2)
    polar.fill(closed, values, color=LINE, alpha=0.15)
    best = math.radians(unit.preferred_orientation)
    top = max(values) if max(values) > 0 else 1.0
    polar.plot([best, best + math.pi], [top, top], "o", color="#c0392b")
    polar.set_yticklabels([])
    polar.tick_params(labelsize=FONT_SIZE - 3)
    polar.set_title(
        f"orientation {unit.preferred_orientation:.1f}°, OSI {unit.osi:.2f}",
        pad=14,
        fontsize=FONT_SIZE - 1,
        family=FONT_FAMILY,
    )
    grating = figure.add_axes((0.36, 0.08, 0.25, 0.68))
    image = unit.grating_image()
    side = min(*image.shape[:2], max(MIN_CROP, math.ceil(CYCLES_SHOWN * unit.preferred_period)))
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    # a central crop of a few cycles: fine stripes shrunk to the panel would alias
    grating.imshow(image[top : top + side, left : left + side], interpolation="nearest")
    grating.set_xticks([])
    grating.set_yticks([])
    grating.set_title(
        f"best grating: {unit.preferred_period:.1f} px/cycle, response "
        f"{unit.best_response:.3g}\n(central {side}×{side} px of {unit.size[0]}×{unit.size[1]})",
        fontsize=FONT_SIZE - 1,
        family=FONT_FAMILY,
    )
    hue = figure.add_axes((0.69, 0.15, 0.29, 0.45))
    colours = [tuple(c / MAX_LEVEL for c in hsv_rgb(h, 1.0, 1.0)) for h in unit.hues]
    step = 360.0 / len(unit.hues)
    hue.bar(unit.hues, unit.hue_curve, width=step * 0.9, color=colours, edgecolor="0.4")
    hue.axhline(0, color="0.5", linewidth=0.8)
    hue.set_xlabel("hue (degrees)", fontsize=FONT_SIZE - 1, family=FONT_FAMILY)
    hue.set_ylabel("response", fontsize=FONT_SIZE - 1, family=FONT_FAMILY)
    hue.tick_params(labelsize=FONT_SIZE - 3)
    swatch = figure.add_axes((0.69, 0.68, 0.05, 0.12))
    swatch.set_xticks([])
    swatch.set_yticks([])
    if unit.preferred_colour is None or unit.preferred_colour_hsv is None:
        note = f"no colour preference:\nevery colour field gives {unit.colour_response:.3g}"
    else:
        swatch.imshow(np.array([[unit.preferred_colour]], dtype=np.uint8))
        hue_deg, saturation, brightness = unit.preferred_colour_hsv
        note = (
            f"preferred colour\nhue {hue_deg:.0f}°, sat {saturation:.2f}, bright {brightness:.1f}"
        )
    figure.text(0.75, 0.69, note, fontsize=FONT_SIZE - 2, family=FONT_FAMILY)
    figure.suptitle(
        f"{unit.layer} map {unit.channel}: tuning",
        fontsize=FONT_SIZE + 1,
        x=0.02,
        y=0.97,
        ha="left",
        family=FONT_FAMILY,
    )
    return rendered(canvas)[..., :3].copy()


def save_tuning(unit: UnitTuning, out_dir: Path, stem: str) -> dict[str, str]:
    """Write ``stem.png`` (the figure), ``stem_grating.png`` (the best grating as fed) and
    ``stem.json`` (the numbers) into ``out_dir``; the file names, by kind."""
    files = {"png": f"{stem}.png", "grating": f"{stem}_grating.png", "json": f"{stem}.json"}
    save_png(tuning_figure(unit), out_dir / files["png"])
    save_png(unit.grating_image(), out_dir / files["grating"])
    write_json({**unit.to_dict(), "files": files}, out_dir / files["json"])
    return files
