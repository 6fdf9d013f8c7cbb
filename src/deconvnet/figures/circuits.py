"""A unit's circuit drawn: the maps below that feed it most and the maps above it feeds
most, each a bar of its signed share (:mod:`deconvnet.instruments.circuits`).

matplotlib on a private Agg figure; PNG + JSON beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deconvnet.figures.files import save_png, write_json
from deconvnet.figures.style import DPI, FONT_FAMILY, FONT_SIZE, rendered
from deconvnet.instruments.circuits import Link, UnitCircuit

WIDTH = 760
HEIGHT = 260
FEEDS = "#1f5fa8"
AGAINST = "#c0392b"


def circuit_figure(circuit: UnitCircuit) -> np.ndarray:
    """``(H, W, 3)`` uint8: two bar charts, upstream shares and downstream shares."""
    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    _bars(
        left, circuit.upstream, circuit.upstream_layer, f"feeds {circuit.layer} {circuit.channel}"
    )
    _bars(right, circuit.downstream, circuit.downstream_layer, "fed by this map")
    rest = (
        f"; mean activation {circuit.activation:.3g}, bias and rest {circuit.rest:.3g}"
        if circuit.activation is not None and circuit.rest is not None
        else ""
    )
    figure.suptitle(
        f"{circuit.layer} map {circuit.channel}: circuit ({circuit.rule} rule, "
        f"{circuit.images} image(s){rest})",
        fontsize=FONT_SIZE,
        family=FONT_FAMILY,
        x=0.02,
        ha="left",
    )
    figure.subplots_adjust(left=0.14, right=0.98, top=0.78, bottom=0.2, wspace=0.45)
    return rendered(canvas)[..., :3].copy()


def _bars(axes: Axes, links: tuple[Link, ...], layer: str | None, what: str) -> None:
    if layer is None or not links:
        axes.set_axis_off()
        note = "no layer measured" if layer is None else f"no {layer} map feeds it positively"
        axes.text(
            0.5,
            0.5,
            note,
            ha="center",
            va="center",
            transform=axes.transAxes,
            fontsize=FONT_SIZE - 1,
            family=FONT_FAMILY,
        )
        return
    labels = [f"{layer} {link.map}" for link in links][::-1]
    shares = [100 * link.share for link in links][::-1]
    axes.barh(labels, shares, color=[FEEDS if s >= 0 else AGAINST for s in shares])
    axes.set_xlabel("share of the unit's input (%)", fontsize=FONT_SIZE - 1, family=FONT_FAMILY)
    axes.set_title(
        f"{layer}: top {len(links)} ({what})", fontsize=FONT_SIZE - 1, family=FONT_FAMILY
    )
    axes.tick_params(labelsize=FONT_SIZE - 2)
    axes.grid(True, axis="x", color="0.9")


def save_circuit(circuit: UnitCircuit, out_dir: Path, stem: str) -> dict[str, str]:
    """Write ``stem.png`` and ``stem.json`` into ``out_dir``; the file names, by kind."""
    files = {"png": f"{stem}.png", "json": f"{stem}.json"}
    save_png(circuit_figure(circuit), out_dir / files["png"])
    write_json({**circuit.to_dict(), "files": files}, out_dir / files["json"])
    return files
