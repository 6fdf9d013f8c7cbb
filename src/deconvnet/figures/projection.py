"""Pictures of engine results: a Projection becomes tiles, a labelled sheet and records.

The CLI, the Jupyter display and any report call these, so every face shows the same
picture. Each projection is shown twice: min–max stretched (the look of the old demo and
the paper) and signed (grey = 0), which keeps negative pixels honest. Both are cropped to
the seeded unit's receptive field when one is known.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from deconvnet.engine.projection import Projection
from deconvnet.engine.receptive import Box, ReceptiveField
from deconvnet.figures import render
from deconvnet.figures.files import save_png
from deconvnet.figures.style import BACKGROUND, BOX_COLOUR, PADDING

PAIR_GAP = 4
"""Pixels between an image patch and its projection."""
OVERVIEW_MIN_SIDE = 256
"""Small inputs (CIFAR's 32×32) are enlarged to at least this for the overview."""


@dataclass(frozen=True)
class ProjectionFigure:
    """One image's K projections, ready to save.

    ``tiles``/``signed_tiles`` are (H, W, 3) uint8 (cropped to ``boxes``); ``sheet`` shows the
    network's input with the units' boxes, then each min–max tile beside its image patch.
    """

    sheet: np.ndarray
    tiles: list[np.ndarray]
    signed_tiles: list[np.ndarray]
    boxes: list[Box | None]
    labels: list[str]
    records: list[dict[str, Any]]


def projection_figure(
    projection: Projection,
    image_index: int = 0,
    *,
    channel_order: str = "RGB",
    receptive_field: ReceptiveField | None = None,
    input_rgb: np.ndarray | None = None,
    layer_label: str | None = None,
    crop: bool = True,
) -> ProjectionFigure:
    """Render the projections of image ``image_index`` of ``projection``.

    Parameters
    ----------
    channel_order : the network's (``"BGR"`` for Caffe models), so colours come out right.
    receptive_field : the layer's field; with ``crop`` each tile is cut to its unit's box.
    input_rgb : (H, W, 3) uint8, the image as the network saw it, shown first in the sheet.
    layer_label : how to name the layer in labels (an alias such as ``conv5``).
    """
    images = projection.images[image_index].detach().cpu().double().numpy()
    height, width = images.shape[-2:]
    name = layer_label or projection.layer
    tiles, signed, boxes, labels, records = [], [], [], [], []
    for k in range(images.shape[0]):
        channel = int(projection.channels[image_index, k])
        value = float(projection.values[image_index, k])
        position = None
        box = None
        if projection.positions is not None:
            position = [int(p) for p in projection.positions[image_index, k]]
            if receptive_field is not None and len(position) == 2:
                box = receptive_field.box(position[0], position[1], (height, width))
        view = images[k]
        if crop and box is not None and box[2] > box[0] and box[3] > box[1]:
            view = np.asarray(render.crop_box(view, box, channels_first=True))
        order: Literal["RGB", "BGR"] = "BGR" if channel_order == "BGR" else "RGB"
        tiles.append(render.to_display(view, "minmax", channel_order=order))
        signed.append(render.to_display(view, "signed", channel_order=order))
        where = f" @{','.join(map(str, position))}" if position else ""
        which = f"ch {channel}" if channel >= 0 else projection.selection.describe()
        labels.append(f"{name} {which}{where}\nvalue {value:.3g}")
        boxes.append(box)
        records.append(
            {
                "k": k,
                "channel": channel,
                "position": position,
                "value": value,
                "receptive_field_box": list(box) if box else None,
            }
        )
    sheet = _sheet(tiles, labels, boxes, input_rgb, projection.policy.rule)
    return ProjectionFigure(sheet, tiles, signed, boxes, labels, records)


def _sheet(
    tiles: list[np.ndarray],
    labels: list[str],
    boxes: list[Box | None],
    input_rgb: np.ndarray | None,
    rule: str,
) -> np.ndarray:
    """The input with numbered unit boxes on top; below, each projection beside its patch."""
    if input_rgb is None:
        return render.contact_sheet(tiles, labels)
    pairs = []
    for tile, box in zip(tiles, boxes, strict=True):
        if box is not None and tile.shape[:2] == (box[2] - box[0], box[3] - box[1]):
            patch = np.asarray(render.crop_box(input_rgb, box))
            gap = np.full((tile.shape[0], PAIR_GAP, 3), BACKGROUND, dtype=np.uint8)
            pairs.append(np.concatenate([patch, gap, tile], axis=1))
        else:
            pairs.append(tile)
    numbered = [f"#{k + 1} {label}" for k, label in enumerate(labels)]
    grid = render.contact_sheet(pairs, numbered)
    overview = _annotated(input_rgb, boxes, rule)
    width = max(grid.shape[1], overview.shape[1])
    canvas = np.full((overview.shape[0] + grid.shape[0], width, 3), BACKGROUND, dtype=np.uint8)
    canvas[: overview.shape[0], : overview.shape[1]] = overview
    canvas[overview.shape[0] :, : grid.shape[1]] = grid
    return canvas


def _annotated(image: np.ndarray, boxes: list[Box | None], rule: str) -> np.ndarray:
    """The network's input with each seeded unit's receptive field outlined and numbered."""
    scale = max(1, OVERVIEW_MIN_SIDE // max(1, min(image.shape[:2])))
    picture = Image.fromarray(image).resize(
        (image.shape[1] * scale, image.shape[0] * scale), Image.Resampling.NEAREST
    )
    draw = ImageDraw.Draw(picture)
    for k, box in enumerate(boxes):
        if box is None:
            continue
        top, left, bottom, right = (v * scale for v in box)
        draw.rectangle((left, top, right - 1, bottom - 1), outline=BOX_COLOUR, width=2)
        draw.text((left + 3, top + 2), str(k + 1), fill=BOX_COLOUR)
    draw.text((4, picture.height - 14), f"input ({rule} rule)", fill=BOX_COLOUR)
    margin = PADDING
    framed = Image.new("RGB", (picture.width + 2 * margin, picture.height + 2 * margin), BACKGROUND)
    framed.paste(picture, (margin, margin))
    return np.asarray(framed).copy()


def save_projection_figure(figure: ProjectionFigure, out_dir: Path, stem: str) -> dict[str, Any]:
    """Write the sheet and every tile as PNG (atomically); returns the file names written."""
    sheet_name = f"{stem}_sheet.png"
    save_png(figure.sheet, out_dir / sheet_name)
    tile_files = []
    for record, tile, signed in zip(figure.records, figure.tiles, figure.signed_tiles, strict=True):
        base = f"{stem}_k{record['k']}_c{record['channel']}"
        save_png(tile, out_dir / f"{base}.png")
        save_png(signed, out_dir / f"{base}_signed.png")
        tile_files.append({"minmax": f"{base}.png", "signed": f"{base}_signed.png"})
    return {"sheet": sheet_name, "tiles": tile_files}


def projection_sheet_png(projection: Projection) -> bytes:
    """PNG bytes of the first image's sheet (for ``Projection._repr_png_`` in Jupyter)."""
    sheet = projection_figure(projection, 0).sheet
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, format="PNG")
    return buffer.getvalue()
