"""The paper's Fig. 2: per map, its top-k projections beside their image patches.

Three kinds of picture, so that a scan of any size stays readable:

* ``tiles/<layer>/<map>.png``, one per map: each of its k projections beside its image
  patch, captioned with the rank, the value and the image's name with its folder (the
  class, in most datasets);
* ``topk_<layer>.png`` contact sheets: per map a cell with a grid of its projections and
  the same grid of patches to its right, each tile captioned, cells row by row in map
  order; a layer whose cells exceed one page's pixel budget (:data:`SHEET_MAX_WIDTH` x
  :data:`SHEET_MAX_HEIGHT`) is split into ``topk_<layer>_page1.png`` … pages;
* the per-tile PNGs the static site shows (``tiles/<layer>/mapNNNN_rankR_*.png``).

Every tile shows the whole receptive field of its unit (the parts that fall outside the
image are left :data:`~deconvnet.figures.style.OUTSIDE_IMAGE` grey) scaled to ``tile``
pixels (at least 128 by default). Layers are named as everywhere else: their alias, else
their dotted name.

**Contrast**: the ``k`` projections of one map share one display range
(:func:`deconvnet.figures.render.display_range` over their crops, the :data:`CLIP_PERCENT`
most extreme values at each end saturating), so their relative strength is visible;
different maps are stretched independently, as in the paper. The displays are
``project``'s (:data:`~deconvnet.figures.render.DISPLAYS`). A JSON index lists every tile
(layer, map, rank, value, image path, position, crop box, tile files). All files are
written atomically.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deconvnet.engine.receptive import Box
from deconvnet.engine.rules import ACTIVATION_MODES, DEFAULT_ACTIVATIONS
from deconvnet.errors import InputError
from deconvnet.figures.files import PngWriter, page_names, write_json
from deconvnet.figures.render import Display, display_range, frame, scaled, show
from deconvnet.figures.style import (
    BACKGROUND,
    EMPTY_SLOT,
    FONT_SIZE,
    HEADER_FONT_SIZE,
    MUTED_TEXT,
    OUTSIDE_IMAGE,
    TITLE_FONT_SIZE,
    draw_text,
    line_height,
    text_size,
)
from deconvnet.instruments.topk.project import ProjectedEntry
from deconvnet.instruments.topk.scan import TopKIndex
from deconvnet.instruments.topk.state import HISTOGRAM_EDGES, MapStats
from deconvnet.storage.paths import component

Progress = Callable[[int, int | None], None]

CLIP_PERCENT = 0.5
"""Percent of the most extreme projection values per end that saturate in a map's shared
range, so a few outlier pixels do not leave the other eight crops faint."""
DEFAULT_TILE = 128
"""Display size (pixels) of the longer side of one receptive-field tile."""
SHEET_MAX_WIDTH = 3300
SHEET_MAX_HEIGHT = 2500
"""A contact sheet page holds as many map cells as fit in this many pixels (about 8 MP,
20 maps of k = 9 at 128 px tiles); more maps go on further pages."""
CAPTION_FONT_SIZE = 11
"""Tile captions on contact sheets (value under a projection, image under a patch)."""
TILE_GAP = 2
BLOCK_GAP = 10
CELL_PAD = 14
LABEL_HEIGHT = 20
TITLE_HEIGHT = 28
HEADER_HEIGHT = 22
PAIR_GAP = 4
"""Pixels between a projection and its patch in a per-map file."""
ELLIPSIS = "…"
INDEX_FILE = "topk_index.json"
INDEX_FORMAT = "deconvnet-topk-index/1"
TILES_DIR = "tiles"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class RenderResult:
    """Paths written by :func:`render`: per layer its sheet pages (``sheets`` holds each
    layer's first), per ``(layer, map)`` its own picture, and the JSON index."""

    sheets: dict[str, Path]
    index_file: Path
    pages: dict[str, list[Path]] = field(default_factory=dict)
    map_files: dict[tuple[str, int], Path] = field(default_factory=dict)


def render(
    index: TopKIndex,
    projections: Mapping[tuple[str, int, int], ProjectedEntry],
    out_dir: str | os.PathLike[str],
    *,
    tile: int = DEFAULT_TILE,
    display: Display = "rgb",
    save_tiles: bool = True,
    metadata: Mapping[str, Any] | None = None,
    display_names: Mapping[str, str] | None = None,
    activations: str = DEFAULT_ACTIVATIONS,
    class_names: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> RenderResult:
    """Write the sheets (paged), per-map and per-tile PNGs and ``topk_index.json``.

    ``metadata`` (e.g. the model's name and weights) is stored at the top of the index;
    ``display_names`` (e.g. ``{"features.4": "conv2"}``) name the sheets, tile folders and
    titles; ``class_names`` (one per class of ``index.labels``, e.g. the model's category
    for each WordNet id) name the classes. ``save_tiles=False`` writes only the sheets and
    the index. ``activations`` is the policy the projections ran under; the sheet titles say
    so when it is not the paper's.
    """
    if tile < 1:
        raise InputError(f"tile must be >= 1 pixel, got {tile}")
    out = Path(out_dir)
    k = index.state.k
    columns = math.ceil(math.sqrt(k))
    records: list[dict[str, Any]] = []
    sheets: dict[str, Path] = {}
    pages: dict[str, list[Path]] = {}
    map_files: dict[tuple[str, int], Path] = {}
    layers = index.layers
    caption = ACTIVATION_MODES[activations].caption
    policy = f" ({caption})" if caption else ""
    with PngWriter() as writer:
        for done, (layer, top) in enumerate(index.state.layers.items(), start=1):
            shown_name = (display_names or {}).get(layer, layer)
            folder = Path(TILES_DIR) / _safe(shown_name)
            cells = []
            for channel in top.channels.tolist():
                items = [projections.get((layer, channel, rank)) for rank in range(k)]
                tiles = _map_tiles(items, tile, display)
                captions = _captions(index, items)
                cells.append((channel, tiles, captions, _max_label(items)))
                if save_tiles and any(item is not None for item in items):
                    picture = _map_picture(shown_name, channel, tiles, captions, items, index)
                    map_files[(layer, channel)] = writer.save(
                        picture, out / folder / f"{channel}.png"
                    )
            layout = _SheetLayout(tile, columns, k)
            parts = layout.pages(len(cells))
            names = page_names(f"topk_{_safe(shown_name)}", len(parts))
            pages[layer] = []
            boxes: dict[tuple[int, int], tuple[str, tuple[Box, Box]]] = {}
            for number, (part, name) in enumerate(zip(parts, names, strict=True), start=1):
                title = f"{shown_name}: the top {k} activations of each map{policy}"
                if len(parts) > 1:
                    title += f" (page {number} of {len(parts)}, maps {_span(cells, part)})"
                sheet, placed = layout.draw(title, cells[part.start : part.stop])
                pages[layer].append(writer.save(sheet, out / name))
                boxes.update({key: (name, box) for key, box in placed.items()})
            sheets[layer] = pages[layer][0]
            for channel, tiles, _, _ in cells:
                for rank, item in enumerate(projections.get((layer, channel, r)) for r in range(k)):
                    if item is None:
                        continue
                    sheet_name, box = boxes[(channel, rank)]
                    record = _record(index, item, sheet_name, box)
                    if save_tiles:
                        stem = f"map{channel:04d}_rank{rank}"
                        projection_tile, patch_tile = tiles[rank]
                        writer.save(projection_tile, out / folder / f"{stem}_projection.png")
                        writer.save(patch_tile, out / folder / f"{stem}_patch.png")
                        record["tile_file"] = (folder / f"{stem}_projection.png").as_posix()
                        record["patch_file"] = (folder / f"{stem}_patch.png").as_posix()
                        record["map_file"] = (folder / f"{channel}.png").as_posix()
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
        "display": display,
        "contrast": f"{display}, one display range shared by the {k} projections of each map",
        "skipped": [{"image": name, "error": why} for name, why in index.skipped],
        "sheets": {layer: path.name for layer, path in sheets.items()},
        "sheet_pages": {layer: [path.name for path in paths] for layer, paths in pages.items()},
        "metadata": dict(metadata or {}),
        "histogram_edges": HISTOGRAM_EDGES.tolist(),
        **_labels_record(index, class_names),
        "stats": {layer: _stats_records(stats) for layer, stats in index.state.stats.items()},
        "entries": records,
    }
    return RenderResult(
        sheets=sheets,
        index_file=write_json(document, out / INDEX_FILE),
        pages=pages,
        map_files=map_files,
    )


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
        "precision": item.precision,
        "image": index.names.get(entry.image_id, str(entry.image_id)),
        "image_id": entry.image_id,
        "label": None if index.labels is None else index.labels.of_image[entry.image_id],
        "position": list(entry.position),
        "crop_box": list(item.crop_box),
        "field_box": list(item.field_box),
        "sheet": sheet,
        "sheet_projection_box": list(boxes[0]),
        "sheet_patch_box": list(boxes[1]),
    }


def _labels_record(index: TopKIndex, class_names: Sequence[str] | None) -> dict[str, Any]:
    """The scan's classes (keys as read, names as shown, images per class), if labelled."""
    labels = index.labels
    if labels is None:
        return {}
    names = list(class_names) if class_names is not None else list(labels.classes)
    if len(names) != len(labels.classes):
        raise InputError(f"{len(names)} class names for {len(labels.classes)} classes")
    counts = next(iter(index.state.stats.values()), None)
    return {
        "labels": {
            "source": labels.source,
            "classes": list(labels.classes),
            "names": names,
            "counts": [] if counts is None else counts.class_counts.tolist(),
        }
    }


def _stats_records(stats: MapStats) -> list[dict[str, Any]]:
    """Per map: images read, max, mean and fire rate (``None`` where no image was read),
    the histogram of its per-image maxima and, for a labelled scan, their sum per class."""
    columns = zip(
        stats.channels.tolist(),
        stats.maximum.tolist(),
        stats.mean.tolist(),
        stats.fire_rate.tolist(),
        stats.histogram.tolist(),
        stats.class_sums.tolist(),
        strict=True,
    )
    return [
        {
            "map": channel,
            "images": stats.images,
            "max": maximum if math.isfinite(maximum) else None,
            "mean": mean if math.isfinite(mean) else None,
            "fire_rate": rate if math.isfinite(rate) else None,
            "histogram": histogram,
            **({"class_sums": sums} if stats.classes else {}),
        }
        for channel, maximum, mean, rate, histogram, sums in columns
    ]


Tiles = list[tuple[np.ndarray, np.ndarray]]
Cell = tuple[int, Tiles, list[tuple[str, str]], str]
"""A map's sheet cell: its channel, (projection, patch) tiles by rank, their captions
(under the projection, under the patch) and the map's label."""


def _map_tiles(items: list[ProjectedEntry | None], tile: int, display: Display) -> Tiles:
    """Display tiles ``(projection, patch)`` per rank with one range for the map."""
    present = [item for item in items if item is not None]
    tiles: Tiles = []
    if not present:
        return tiles
    scale = display_range([item.projection for item in present], display, clip_percent=CLIP_PERCENT)
    for item in items:
        if item is None:
            blank = np.full((tile, tile, 3), EMPTY_SLOT, dtype=np.uint8)
            tiles.append((blank, blank))
            continue
        shown = show(item.projection, display, scale=scale, image=item.patch)
        tiles.append(
            (
                _framed(shown, item.crop_box, item.field_box, tile),
                _framed(item.patch, item.crop_box, item.field_box, tile),
            )
        )
    return tiles


def _captions(index: TopKIndex, items: list[ProjectedEntry | None]) -> list[tuple[str, str]]:
    """Per rank: ``#1 3.22e3`` under the projection, the image (with its folder) under the
    patch."""
    captions = []
    for rank, item in enumerate(items):
        if item is None:
            captions.append((f"#{rank + 1}", "no image"))
            continue
        name = index.names.get(item.entry.image_id, str(item.entry.image_id))
        captions.append((f"#{rank + 1}  {item.entry.value:.3g}", image_label(name)))
    return captions


def _max_label(items: list[ProjectedEntry | None]) -> str:
    present = [item for item in items if item is not None]
    return f"max {present[0].entry.value:.3g}" if present else "no image"


def _map_picture(
    layer: str,
    channel: int,
    tiles: Tiles,
    captions: list[tuple[str, str]],
    items: list[ProjectedEntry | None],
    index: TopKIndex,
) -> np.ndarray:
    """One map's own file: a title, then per rank its projection beside its patch, the
    rank and value and the image (with its folder) under them."""
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    tile_h, tile_w = tiles[0][0].shape[:2]
    pair_w = 2 * tile_w + PAIR_GAP
    caption_h = 2 * line_height(CAPTION_FONT_SIZE)
    cell_w, cell_h = pair_w + CELL_PAD, tile_h + caption_h + CELL_PAD
    title = f"{layer} · map {channel}: its top {len(items)} of {index.num_images} images"
    note = "left: deconvnet projection; right: the image patch (the unit's receptive field)"
    heading_h = line_height(TITLE_FONT_SIZE) + line_height(FONT_SIZE) + CELL_PAD
    width = max(columns * cell_w + CELL_PAD, text_size(title, TITLE_FONT_SIZE)[0] + 2 * CELL_PAD)
    canvas = np.full((heading_h + rows * cell_h + CELL_PAD, width, 3), BACKGROUND, np.uint8)
    draw_text(canvas, CELL_PAD, 4, title, TITLE_FONT_SIZE)
    draw_text(canvas, CELL_PAD, 4 + line_height(TITLE_FONT_SIZE), note, colour=MUTED_TEXT)
    for rank, ((projection, patch), (value, image)) in enumerate(zip(tiles, captions, strict=True)):
        top = heading_h + (rank // columns) * cell_h
        left = CELL_PAD + (rank % columns) * cell_w
        canvas[top : top + tile_h, left : left + tile_w] = projection
        canvas[top : top + tile_h, left + tile_w + PAIR_GAP : left + pair_w] = patch
        draw_text(canvas, left, top + tile_h, value, CAPTION_FONT_SIZE)
        below = top + tile_h + line_height(CAPTION_FONT_SIZE)
        draw_text(canvas, left, below, _fit(image, pair_w), CAPTION_FONT_SIZE, colour=MUTED_TEXT)
    return canvas


def _framed(pixels: np.ndarray, crop: Box, field: Box, tile: int) -> np.ndarray:
    """Place the clipped crop inside its full receptive-field box, scaled to ``tile``."""
    relative = (field[0] - crop[0], field[1] - crop[1], field[2] - crop[0], field[3] - crop[1])
    return scaled(frame(pixels, relative, OUTSIDE_IMAGE), tile)


@dataclass(frozen=True)
class _SheetLayout:
    """Where a layer's map cells go on contact-sheet pages of at most
    :data:`SHEET_MAX_WIDTH` x :data:`SHEET_MAX_HEIGHT` pixels."""

    tile: int
    columns: int
    k: int

    @property
    def block(self) -> tuple[int, int]:
        """Width and height of one map's grid of tiles with their captions."""
        rows = math.ceil(max(1, self.k) / self.columns)
        width = self.columns * (self.tile + TILE_GAP) - TILE_GAP
        row_h = self.tile + line_height(CAPTION_FONT_SIZE) + TILE_GAP
        return width, rows * row_h - TILE_GAP

    @property
    def cell(self) -> tuple[int, int]:
        block_w, block_h = self.block
        return 2 * block_w + BLOCK_GAP + CELL_PAD, LABEL_HEIGHT + block_h + CELL_PAD

    def per_page(self) -> tuple[int, int]:
        """Cells per row and rows per page within the budget (at least one of each)."""
        cell_w, cell_h = self.cell
        per_row = max(1, (SHEET_MAX_WIDTH - CELL_PAD) // cell_w)
        rows = max(1, (SHEET_MAX_HEIGHT - TITLE_HEIGHT - HEADER_HEIGHT - CELL_PAD) // cell_h)
        return per_row, rows

    def pages(self, count: int) -> list[range]:
        per_row, rows = self.per_page()
        size = per_row * rows
        return [range(start, min(start + size, count)) for start in range(0, max(count, 1), size)]

    def draw(
        self, title: str, cells: list[Cell]
    ) -> tuple[np.ndarray, dict[tuple[int, int], tuple[Box, Box]]]:
        """One page: the title, headers, then a cell per map; returns the page and where
        each (map, rank)'s projection and patch tiles are on it."""
        tile, columns = self.tile, self.columns
        block_w, _ = self.block
        cell_w, cell_h = self.cell
        fit_row, fit_rows = self.per_page()
        count = max(1, len(cells))
        squarish = max(math.ceil(math.sqrt(count / 2)), math.ceil(count / fit_rows))
        per_row = max(1, min(fit_row, squarish, count))
        rows = max(1, math.ceil(len(cells) / per_row))
        width = max(per_row * cell_w + CELL_PAD, 2 * block_w + 2 * CELL_PAD)
        top_margin = TITLE_HEIGHT + HEADER_HEIGHT
        sheet = np.full((top_margin + rows * cell_h + CELL_PAD, width, 3), BACKGROUND, np.uint8)
        draw_text(sheet, CELL_PAD, 4, title, TITLE_FONT_SIZE)
        for column in range(min(per_row, len(cells))):
            left = CELL_PAD + column * cell_w
            header_top = TITLE_HEIGHT + 2
            draw_text(
                sheet,
                left,
                header_top,
                "deconvnet projections",
                HEADER_FONT_SIZE,
                colour=MUTED_TEXT,
            )
            draw_text(
                sheet,
                left + block_w + BLOCK_GAP,
                header_top,
                "image patches",
                HEADER_FONT_SIZE,
                colour=MUTED_TEXT,
            )
        row_h = tile + line_height(CAPTION_FONT_SIZE) + TILE_GAP
        boxes: dict[tuple[int, int], tuple[Box, Box]] = {}
        for number, (channel, tiles, captions, label) in enumerate(cells):
            left = CELL_PAD + (number % per_row) * cell_w
            top = top_margin + (number // per_row) * cell_h
            draw_text(sheet, left, top, f"map {channel}  {label}", FONT_SIZE)
            for rank, ((projection, patch), (value, image)) in enumerate(
                zip(tiles, captions, strict=True)
            ):
                y = top + LABEL_HEIGHT + (rank // columns) * row_h
                x = left + (rank % columns) * (tile + TILE_GAP)
                x_patch = x + block_w + BLOCK_GAP
                height, width_tile = projection.shape[:2]
                sheet[y : y + height, x : x + width_tile] = projection
                sheet[y : y + height, x_patch : x_patch + width_tile] = patch
                caption_y = y + height
                draw_text(sheet, x, caption_y, _fit(value, tile), CAPTION_FONT_SIZE)
                draw_text(
                    sheet,
                    x_patch,
                    caption_y,
                    _fit(image, tile),
                    CAPTION_FONT_SIZE,
                    colour=MUTED_TEXT,
                )
                boxes[(channel, rank)] = (
                    (y, x, y + height, x + width_tile),
                    (y, x_patch, y + height, x_patch + width_tile),
                )
        return sheet, boxes


def _fit(text: str, width: int) -> str:
    """``text`` cut from the left behind an ellipsis until it fits ``width`` pixels (the end
    of a file name says most); a few measurements, not one per character."""
    full = text_size(text, CAPTION_FONT_SIZE)[0]
    if full <= width:
        return text
    keep = max(1, int(len(text) * width / full) - 1)  # glyphs are about equally wide
    while keep > 1 and text_size(ELLIPSIS + text[-keep:], CAPTION_FONT_SIZE)[0] > width:
        keep -= 1
    return ELLIPSIS + text[-keep:]


def _span(cells: list[Cell], part: range) -> str:
    return f"{cells[part.start][0]}-{cells[part.stop - 1][0]}"


def image_label(name: str) -> str:
    """An image's file name with the folder it lies in, which names the class in most
    datasets (``cifar10/test/cat/0015.jpg`` -> ``cat/0015.jpg``)."""
    return "/".join(Path(str(name)).parts[-2:])


def _safe(name: str) -> str:
    """A file-name-safe version of a layer name (``fire2/concat`` -> ``fire2_concat``;
    never ``.`` or ``..``: :func:`~deconvnet.storage.paths.component`)."""
    return component(_UNSAFE.sub("_", name).strip("_") or "layer")
