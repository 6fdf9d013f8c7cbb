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
from typing import Any

import numpy as np
from PIL import Image

from deconvnet import render
from deconvnet.engine import Projection
from deconvnet.receptive import Box, ReceptiveField


@dataclass(frozen=True)
class ProjectionFigure:
    """One image's K projections, ready to save.

    ``tiles``/``signed_tiles`` are (H, W, 3) uint8 (cropped to ``boxes``); ``sheet`` lays out
    the network's input image first, then the K min–max tiles with their labels.
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
        order = "BGR" if channel_order == "BGR" else "RGB"
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
    sheet_tiles = list(tiles)
    sheet_labels = list(labels)
    if input_rgb is not None:
        sheet_tiles.insert(0, input_rgb)
        sheet_labels.insert(0, f"input\n{projection.policy.rule} rule")
    sheet = render.contact_sheet(sheet_tiles, sheet_labels)
    return ProjectionFigure(sheet, tiles, signed, boxes, labels, records)


def save_projection_figure(figure: ProjectionFigure, out_dir: Path, stem: str) -> dict[str, Any]:
    """Write the sheet and every tile as PNG (atomically); returns the file names written."""
    sheet_name = f"{stem}_sheet.png"
    render.save_png(figure.sheet, out_dir / sheet_name)
    tile_files = []
    for record, tile, signed in zip(figure.records, figure.tiles, figure.signed_tiles, strict=True):
        base = f"{stem}_k{record['k']}_c{record['channel']}"
        render.save_png(tile, out_dir / f"{base}.png")
        render.save_png(signed, out_dir / f"{base}_signed.png")
        tile_files.append({"minmax": f"{base}.png", "signed": f"{base}_signed.png"})
    return {"sheet": sheet_name, "tiles": tile_files}


def projection_sheet_png(projection: Projection) -> bytes:
    """PNG bytes of the first image's sheet (for ``Projection._repr_png_`` in Jupyter)."""
    sheet = projection_figure(projection, 0).sheet
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, format="PNG")
    return buffer.getvalue()
