"""The paper's Fig. 2 sheets: per map, its top-k projections beside their image patches.

One PNG per layer. Each map gets a cell: its label, a ``ceil(sqrt(k))``-wide grid of the
projections (rank 0 top-left, row-major), and the same grid of the image patches to its
right; cells fill the sheet row by row in map order. Every tile shows the whole
receptive field of its unit (the parts that fall outside the image are left
:data:`~deconvnet.figures.style.OUTSIDE_IMAGE` grey) scaled to ``tile`` pixels.

**Contrast**: the ``k`` projections of one map share one display range
(:func:`deconvnet.figures.render.shared_range` over their crops, ``"minmax"`` by default, the
:data:`CLIP_PERCENT` most extreme values at each end saturating), so their relative
strength is visible; different maps are stretched independently, as in
the paper. A JSON index lists every tile (layer, map, rank, value, image path, position,
crop box, tile files). All files are written atomically.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deconvnet.engine.receptive import Box
from deconvnet.errors import InputError
from deconvnet.figures.files import PngWriter, write_json
from deconvnet.figures.render import DisplayMode, frame, scaled, shared_range, to_display
from deconvnet.figures.style import (
    BACKGROUND,
    EMPTY_SLOT,
    FONT_SIZE,
    HEADER_FONT_SIZE,
    MUTED_TEXT,
    OUTSIDE_IMAGE,
    TITLE_FONT_SIZE,
    draw_text,
)
from deconvnet.instruments.topk.project import ProjectedEntry
from deconvnet.instruments.topk.scan import TopKIndex
from deconvnet.instruments.topk.state import MapStats

Progress = Callable[[int, int | None], None]

CLIP_PERCENT = 0.5
"""Percent of the most extreme projection values per end that saturate in a map's shared
range, so a few outlier pixels do not leave the other eight crops faint."""
DEFAULT_TILE = 96
"""Display size (pixels) of the longer side of one receptive-field tile."""
TILE_GAP = 2
BLOCK_GAP = 10
CELL_PAD = 14
LABEL_HEIGHT = 20
TITLE_HEIGHT = 28
HEADER_HEIGHT = 22
INDEX_FILE = "topk_index.json"
INDEX_FORMAT = "deconvnet-topk-index/1"
TILES_DIR = "tiles"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class RenderResult:
    """Paths written by :func:`render`: one sheet per layer and the JSON index."""

    sheets: dict[str, Path]
    index_file: Path


def render(
    index: TopKIndex,
    projections: Mapping[tuple[str, int, int], ProjectedEntry],
    out_dir: str | os.PathLike[str],
    *,
    tile: int = DEFAULT_TILE,
    mode: DisplayMode = "minmax",
    save_tiles: bool = True,
    metadata: Mapping[str, Any] | None = None,
    display_names: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> RenderResult:
    """Write ``topk_<layer>.png`` per layer, optional per-tile PNGs and ``topk_index.json``.

    ``metadata`` (e.g. the model's name and weights) is stored at the top of the index;
    ``display_names`` (e.g. ``{"features.4": "conv2"}``) name the sheets and tile folders.
    """
    if tile < 1:
        raise InputError(f"tile must be >= 1 pixel, got {tile}")
    out = Path(out_dir)
    k = index.state.k
    columns = math.ceil(math.sqrt(k))
    records: list[dict[str, Any]] = []
    sheets: dict[str, Path] = {}
    layers = index.layers
    with PngWriter() as writer:
        for done, (layer, top) in enumerate(index.state.layers.items(), start=1):
            channels = top.channels.tolist()
            cells = []
            for channel in channels:
                items = [projections.get((layer, channel, rank)) for rank in range(k)]
                cells.append((channel, _map_tiles(items, tile, mode)))
            shown_name = (display_names or {}).get(layer, layer)
            sheet, boxes = _layer_sheet(shown_name, cells, tile, columns)
            name = f"topk_{_safe(shown_name)}.png"
            sheets[layer] = writer.save(sheet, out / name)
            for channel, (tiles, _) in cells:
                for rank, item in enumerate(projections.get((layer, channel, r)) for r in range(k)):
                    if item is None:
                        continue
                    record = _record(index, item, name, boxes[(channel, rank)])
                    if save_tiles:
                        folder = Path(TILES_DIR) / _safe(shown_name)
                        stem = f"map{channel:04d}_rank{rank}"
                        projection_tile, patch_tile = tiles[rank]
                        writer.save(projection_tile, out / folder / f"{stem}_projection.png")
                        writer.save(patch_tile, out / folder / f"{stem}_patch.png")
                        record["tile_file"] = (folder / f"{stem}_projection.png").as_posix()
                        record["patch_file"] = (folder / f"{stem}_patch.png").as_posix()
                    records.append(record)
            if progress is not None:
                progress(done, len(layers))
    document = {
        "format": INDEX_FORMAT,
        "k": k,
        "maps": index.maps,
        "seed": index.seed,
        "images_scanned": index.num_images,
        "images_read": index.state.images_seen,
        "dataset_fingerprint": index.fingerprint,
        "dataset_content": index.content_fingerprint,
        "contrast": f"{mode}, one display range shared by the {k} projections of each map",
        "skipped": [{"image": name, "error": why} for name, why in index.skipped],
        "sheets": {layer: path.name for layer, path in sheets.items()},
        "metadata": dict(metadata or {}),
        "stats": {layer: _stats_records(stats) for layer, stats in index.state.stats.items()},
        "entries": records,
    }
    return RenderResult(sheets=sheets, index_file=write_json(document, out / INDEX_FILE))


def _record(
    index: TopKIndex, item: ProjectedEntry, sheet: str, boxes: tuple[Box, Box]
) -> dict[str, Any]:
    entry = item.entry
    return {
        "layer": entry.layer,
        "map": entry.channel,
        "rank": entry.rank,
        "value": entry.value,
        "projected_value": item.value,
        "image": index.names.get(entry.image_id, str(entry.image_id)),
        "image_id": entry.image_id,
        "position": list(entry.position),
        "crop_box": list(item.crop_box),
        "field_box": list(item.field_box),
        "sheet": sheet,
        "sheet_projection_box": list(boxes[0]),
        "sheet_patch_box": list(boxes[1]),
    }


def _stats_records(stats: MapStats) -> list[dict[str, Any]]:
    """Per map: images read, max, mean and fire rate; ``None`` where no image was read."""
    columns = zip(
        stats.channels.tolist(),
        stats.maximum.tolist(),
        stats.mean.tolist(),
        stats.fire_rate.tolist(),
        strict=True,
    )
    return [
        {
            "map": channel,
            "images": stats.images,
            "max": maximum if math.isfinite(maximum) else None,
            "mean": mean if math.isfinite(mean) else None,
            "fire_rate": rate if math.isfinite(rate) else None,
        }
        for channel, maximum, mean, rate in columns
    ]


def _map_tiles(
    items: list[ProjectedEntry | None], tile: int, mode: DisplayMode
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Display tiles ``(projection, patch)`` per rank with one range for the map."""
    present = [item for item in items if item is not None]
    tiles: list[tuple[np.ndarray, np.ndarray]] = []
    if not present:
        return tiles, ""
    scale = shared_range([item.projection for item in present], mode, clip_percent=CLIP_PERCENT)
    for item in items:
        if item is None:
            blank = np.full((tile, tile, 3), EMPTY_SLOT, dtype=np.uint8)
            tiles.append((blank, blank))
            continue
        shown = to_display(item.projection, mode, scale=scale)
        tiles.append(
            (
                _framed(shown, item.crop_box, item.field_box, tile),
                _framed(item.patch, item.crop_box, item.field_box, tile),
            )
        )
    return tiles, f"max {present[0].entry.value:.3g}"


def _framed(pixels: np.ndarray, crop: Box, field: Box, tile: int) -> np.ndarray:
    """Place the clipped crop inside its full receptive-field box, scaled to ``tile``."""
    relative = (field[0] - crop[0], field[1] - crop[1], field[2] - crop[0], field[3] - crop[1])
    return scaled(frame(pixels, relative, OUTSIDE_IMAGE), tile)


def _layer_sheet(
    layer: str,
    cells: list[tuple[int, tuple[list[tuple[np.ndarray, np.ndarray]], str]]],
    tile: int,
    columns: int,
) -> tuple[np.ndarray, dict[tuple[int, int], tuple[Box, Box]]]:
    """Cells of (projection grid | patch grid) per map; returns the sheet and tile boxes."""
    rows_per_map = math.ceil(max(1, max((len(t) for _, (t, _) in cells), default=1)) / columns)
    block_w = columns * (tile + TILE_GAP) - TILE_GAP
    block_h = rows_per_map * (tile + TILE_GAP) - TILE_GAP
    cell_w = 2 * block_w + BLOCK_GAP + CELL_PAD
    cell_h = LABEL_HEIGHT + block_h + CELL_PAD
    per_row = max(1, math.ceil(math.sqrt(len(cells) / 2)))
    rows = max(1, math.ceil(len(cells) / per_row))
    width = max(per_row * cell_w + CELL_PAD, 2 * block_w + 2 * CELL_PAD)
    top_margin = TITLE_HEIGHT + HEADER_HEIGHT
    sheet = np.full((top_margin + rows * cell_h + CELL_PAD, width, 3), BACKGROUND, np.uint8)
    title = f"{layer}: the top {len(cells[0][1][0]) if cells else 0} activations of each map"
    draw_text(sheet, CELL_PAD, 4, title, TITLE_FONT_SIZE)
    for column in range(min(per_row, len(cells))):
        left = CELL_PAD + column * cell_w
        header_top = TITLE_HEIGHT + 2
        draw_text(
            sheet, left, header_top, "deconvnet projections", HEADER_FONT_SIZE, colour=MUTED_TEXT
        )
        draw_text(
            sheet,
            left + block_w + BLOCK_GAP,
            header_top,
            "image patches",
            HEADER_FONT_SIZE,
            colour=MUTED_TEXT,
        )
    boxes: dict[tuple[int, int], tuple[Box, Box]] = {}
    for number, (channel, (tiles, caption)) in enumerate(cells):
        left = CELL_PAD + (number % per_row) * cell_w
        top = top_margin + (number // per_row) * cell_h
        draw_text(sheet, left, top, f"map {channel}  {caption}", FONT_SIZE)
        for rank, (projection, patch) in enumerate(tiles):
            y = top + LABEL_HEIGHT + (rank // columns) * (tile + TILE_GAP)
            x = left + (rank % columns) * (tile + TILE_GAP)
            x_patch = x + block_w + BLOCK_GAP
            height, width_tile = projection.shape[:2]
            sheet[y : y + height, x : x + width_tile] = projection
            sheet[y : y + height, x_patch : x_patch + width_tile] = patch
            boxes[(channel, rank)] = (
                (y, x, y + height, x + width_tile),
                (y, x_patch, y + height, x_patch + width_tile),
            )
    return sheet, boxes


def _safe(name: str) -> str:
    """A file-name-safe version of a layer name (``fire2/concat`` -> ``fire2_concat``)."""
    return _UNSAFE.sub("_", name).strip("_") or "layer"
