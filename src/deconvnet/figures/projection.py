"""Pictures of engine results: a Projection becomes a Fig.-2-like sheet, tiles and records.

The CLI, Jupyter (``_repr_html_``/``_repr_png_``) and ``Projection.save`` call these, so
every face shows the same picture. The sheet: the network's input at a readable size with
each unit's receptive field outlined in its own colour and listed in a legend; below, per
unit, the image patch beside its projection, both cropped to the unit's receptive field
(clipped border fields padded to their full size, so position stays true) and scaled to
one tile size; column headers say which is which.
"""

from __future__ import annotations

import base64
import html
import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from deconvnet.engine.projection import Projection
from deconvnet.engine.receptive import Box, ReceptiveField
from deconvnet.engine.selection import JOINT_CHANNEL
from deconvnet.errors import InputError
from deconvnet.figures import panels
from deconvnet.figures.files import png_bytes, save_png, write_json
from deconvnet.figures.render import (
    Display,
    DisplayRange,
    crop_box,
    display_range,
    frame,
    scaled,
    show,
)
from deconvnet.figures.style import (
    BACKGROUND,
    FONT_SIZE,
    HEADER_FONT_SIZE,
    MUTED_TEXT,
    OUTSIDE_IMAGE,
    PADDING,
    SHEET_FONT_SIZE,
    TEXT,
    TITLE_FONT_SIZE,
    UNIT_COLOURS,
    WARNING_TEXT,
    draw_text,
    text_image,
    text_size,
    wrap_text,
)
from deconvnet.inputs.images import deprocess
from deconvnet.instruments.signal import BlankReport

Contrast = Literal["tile", "shared"]
CONTRASTS: tuple[Contrast, ...] = ("tile", "shared")
"""``tile``: each projection stretched on its own (the paper's); ``shared``: one scale for
all tiles of the sheet, so their strengths compare."""

DEFAULT_TILE = 160
"""Pixels of a sheet tile's longer side (patches and projections alike)."""
OVERVIEW_SIDE = 384
"""The input is drawn with this longer side (smoothly scaled; nearest when enlarged > 2x)."""
MIN_FILE_SIDE = 128
"""Per-projection files are enlarged (nearest, integer factor) to at least this."""
PAIR_GAP = 4
"""Pixels between an image patch and its projection."""
CELL_GAP = 20
"""Pixels between neighbouring patch–projection pairs."""
BOX_WIDTH = 2
LEGEND_WIDTH = 300
MANIFEST = "manifest.json"
LEGEND_SWATCH = 14
SMOOTH_ENLARGE_LIMIT = 2.0
"""Overviews enlarged more than this use nearest neighbour (CIFAR's 32 px stays crisp)."""


@dataclass(frozen=True)
class FigureOptions:
    """How a projection sheet looks (the CLI's ``--display``, ``--contrast``, ...)."""

    display: Display = "rgb"
    contrast: Contrast = "tile"
    full_frame: bool = False
    tile: int = DEFAULT_TILE
    captions: bool = False
    """Per-projection files get a caption strip under the picture."""

    def __post_init__(self) -> None:
        if self.contrast not in CONTRASTS:
            raise InputError(f"contrast must be one of {', '.join(CONTRASTS)}")
        if self.tile < 16:
            raise InputError(f"tile must be at least 16 pixels, got {self.tile}")


@dataclass(frozen=True)
class ProjectionFigure:
    """One image's K projections, ready to save.

    ``pictures`` are the projections as displayed, at the crop's own resolution; ``files``
    the same enlarged to >= 128 px (and captioned if asked); ``crops`` are the
    input boxes they show (may reach outside the image: that part is padded grey);
    ``overview_box`` is where the input with its boxes sits in ``sheet``, ``tile_boxes``
    where each (patch, projection) pair does.
    """

    sheet: np.ndarray
    overview: np.ndarray
    pictures: list[np.ndarray]
    files: list[np.ndarray]
    crops: list[Box]
    fields: list[Box | None]
    labels: list[str]
    names: list[str]
    records: list[dict[str, Any]]
    overview_box: Box
    tile_boxes: list[tuple[Box, Box]] = field(default_factory=list)


def projection_figure(
    projection: Projection,
    image_index: int = 0,
    *,
    options: FigureOptions | None = None,
    input_rgb: np.ndarray | None = None,
    receptive_field: ReceptiveField | None = None,
    channel_order: Literal["RGB", "BGR"] | None = None,
    layer_label: str | None = None,
    categories: Sequence[str] | None = None,
    blanks: BlankReport | None = None,
) -> ProjectionFigure:
    """Draw the projections of image ``image_index`` of ``projection``.

    ``blanks`` (from :func:`deconvnet.instruments.signal.explain_blanks`) marks the blank
    projections: their captions say so and a line under the title says why.

    Everything but ``projection`` defaults to what it carries: the input image (de-
    preprocessed), the layer's receptive field, the channel order, layer alias and class
    names of the model. Pass ``input_rgb`` (``(H, W, 3)`` uint8, the image as the network
    saw it) to show exactly those pixels.
    """
    options = options or FigureOptions()
    spec = projection.preprocessing
    order = channel_order or (spec.channel_order if spec is not None else "RGB")
    images = projection.images[image_index].detach().cpu().double().numpy()
    height, width = images.shape[-2:]
    rgb = input_rgb if input_rgb is not None else _input_rgb(projection, image_index)
    if rgb is not None and rgb.shape[:2] != (height, width):
        raise InputError(f"input_rgb is {rgb.shape[:2]}, the projection {(height, width)}")
    field_ = receptive_field if receptive_field is not None else projection.receptive_field
    names = categories if categories is not None else projection.categories
    layer = layer_label or projection.layer_alias or projection.layer
    count = images.shape[0]
    crops, fields = [], []
    for k in range(count):
        unit_field = _unit_field(projection, image_index, k, field_, (height, width))
        fields.append(unit_field)
        whole = (0, 0, height, width)
        crops.append(whole if options.full_frame or unit_field is None else unit_field)
    scale = _shared_scale(images, crops, options) if options.contrast == "shared" else None
    patches, shown = [], []
    for k in range(count):
        patch = frame(rgb, crops[k], OUTSIDE_IMAGE) if rgb is not None else None
        values = frame(images[k], crops[k], 0.0, channels_first=True)
        under = patch if patch is not None else np.full((*values.shape[1:], 3), 128, np.uint8)
        inside = crop_box(images[k], crops[k], channels_first=True)  # padding is not data
        tile_scale = scale or display_range([inside], options.display)
        picture = show(values, options.display, scale=tile_scale, image=under, channel_order=order)
        picture[~frame(np.ones((height, width), bool), crops[k], False)] = OUTSIDE_IMAGE
        patches.append(patch)
        shown.append(picture)
    labels, file_names, records = [], [], []
    blank = set(blanks.blank) if blanks is not None else set()
    for k in range(count):
        label, record = _describe(projection, image_index, k, names)
        record["blank"] = k in blank
        if k in blank:
            label += "\nblank: " + _blank_reason(blanks, k)
        unit_field = fields[k]
        record["receptive_field_box"] = list(unit_field) if unit_field is not None else None
        record["crop_box"] = list(crops[k])
        labels.append(label)
        records.append(record)
        file_names.append(_unit_name(record))
    overview = _overview(rgb, fields, labels) if rgb is not None else _no_input(layer)
    files = [
        _file_picture(picture, labels[k] if options.captions else None)
        for k, picture in enumerate(shown)
    ]
    zoomed = any(crop != (0, 0, height, width) for crop in crops)
    warning = blanks.sentence(count) if blanks is not None else None
    sheet, overview_box, tile_boxes = _sheet(
        projection, layer, overview, patches, shown, labels, options, zoomed, warning
    )
    return ProjectionFigure(
        sheet=sheet,
        overview=overview,
        pictures=shown,
        files=files,
        crops=crops,
        fields=fields,
        labels=labels,
        names=file_names,
        records=records,
        overview_box=overview_box,
        tile_boxes=tile_boxes,
    )


def save_projection_figure(figure: ProjectionFigure, out_dir: Path, stem: str) -> dict[str, Any]:
    """Write the sheet and every projection as PNG (atomically); returns the names written."""
    sheet_name = f"{stem}_sheet.png"
    save_png(figure.sheet, out_dir / sheet_name)
    written = []
    for picture, name in zip(figure.files, figure.names, strict=True):
        file_name = f"{stem}_{name}.png"
        save_png(picture, out_dir / file_name)
        written.append(file_name)
    return {"sheet": sheet_name, "projections": written}


def manifest_entry(
    figure: ProjectionFigure, files: Mapping[str, Any], image: str, input_size: Sequence[int]
) -> dict[str, Any]:
    """One image's part of a manifest: its sheet and, per projection, record and file."""
    return {
        "image": image,
        "input_size": list(input_size),
        "sheet": files["sheet"],
        "projections": [
            {**record, "file": name}
            for record, name in zip(figure.records, files["projections"], strict=True)
        ],
    }


def blank_record(blanks: BlankReport, count: int) -> dict[str, Any]:
    """A manifest's account of blank projections: which, where the signal died, which rule
    reaches the pixels, and the sentence the figure and stderr show."""
    return {
        "projections": list(blanks.blank),
        "rule": blanks.rule,
        "zero_below": {str(k): place for k, place in blanks.reached.items()},
        "other_rules_reaching": blanks.reaching,
        "note": blanks.sentence(count),
    }


def manifest(
    projection: Projection, entries: list[dict[str, Any]], options: FigureOptions
) -> dict[str, Any]:
    """The fields every projection manifest has (the CLI adds the model's provenance)."""
    return {
        "layer": projection.layer,
        "layer_alias": projection.layer_alias,
        "selection": projection.selection.describe(),
        "rule": projection.policy.rule,
        "lrn": projection.policy.lrn,
        "collisions": projection.policy.collisions,
        "activations": projection.policy.activations,
        "precision": projection.policy.precision,
        "precision_used": projection.precision,
        "display": options.display,
        "contrast": options.contrast,
        "full_frame": options.full_frame,
        "images": entries,
    }


class ProjectionViews:
    """What ``Projection`` shows in Jupyter and writes with ``save`` (registered by the
    package facade, since the engine never imports figures).

    Jupyter asks one object for every representation it has (HTML and PNG), so the first
    image's default figure is drawn once per projection and remembered while it lives.
    """

    def __init__(self) -> None:
        self._drawn: weakref.WeakKeyDictionary[Projection, ProjectionFigure] = (
            weakref.WeakKeyDictionary()
        )

    def png(self, projection: Projection) -> bytes:
        return png_bytes(self._figure(projection).sheet)

    def html(self, projection: Projection) -> str:
        figure = self._figure(projection)
        title = html.escape(repr(projection))
        return (
            f'<div class="deconvnet-projection"><p><code>{title}</code></p>'
            f"<img alt=\"the input with each unit's receptive field, then per unit its image "
            f'patch and projection" src="{_data_url(figure.sheet)}"/></div>'
        )

    def save(self, projection: Projection, out_dir: Path) -> Path:
        options = FigureOptions()
        entries = []
        for index in range(projection.images.shape[0]):
            figure = projection_figure(projection, index, options=options)
            files = save_projection_figure(figure, out_dir, f"{index:02d}")
            shape = projection.images.shape[-2:]
            entries.append(manifest_entry(figure, files, f"batch[{index}]", shape))
        return write_json(manifest(projection, entries, options), out_dir / MANIFEST)

    def _figure(self, projection: Projection) -> ProjectionFigure:
        figure = self._drawn.get(projection)
        if figure is None:
            figure = self._drawn[projection] = projection_figure(projection)
        return figure


def _data_url(picture: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(picture)).decode("ascii")


def _input_rgb(projection: Projection, index: int) -> np.ndarray | None:
    if projection.inputs is None or projection.preprocessing is None:
        return None
    if projection.inputs.dim() != 4 or projection.inputs.shape[1] != 3:
        return None
    return deprocess(projection.inputs[index : index + 1], projection.preprocessing)


def _unit_field(
    projection: Projection,
    index: int,
    k: int,
    field_: ReceptiveField | None,
    image_hw: tuple[int, int],
) -> Box | None:
    """The input box unit ``k`` looks at: its full field for single units (may reach past
    the border), the union of the seeded units' fields, clipped, for joint selections."""
    if field_ is None or projection.extents is None:
        return None
    if field_.is_global:
        return 0, 0, image_hw[0], image_hw[1]
    extent = projection.extents[index, k].tolist()
    joint = projection.positions is None
    box = field_.span(extent, image_hw if joint else None)
    if box is None or box[2] <= box[0] or box[3] <= box[1]:
        return None
    return box


def _shared_scale(images: np.ndarray, crops: list[Box], options: FigureOptions) -> DisplayRange:
    return display_range(
        [crop_box(images[k], crop, channels_first=True) for k, crop in enumerate(crops)],
        options.display,
    )


def _describe(
    projection: Projection,
    index: int,
    k: int,
    categories: Sequence[str] | None,
) -> tuple[str, dict[str, Any]]:
    """The caption of projection ``k`` and its manifest record."""
    channel = int(projection.channels[index, k])
    value = float(projection.values[index, k])
    position = None
    if projection.positions is not None:
        position = [int(p) for p in projection.positions[index, k]]
    class_name = _class_name(projection, channel, categories)
    joint = projection.positions is None
    shape = projection.layer_shape
    fc = shape is not None and (len(shape) == 1 or all(size == 1 for size in shape[1:]))
    if joint:
        what = projection.selection.describe()
    else:
        what = f"unit {channel}" if fc else f"map {channel}"
    where = f" @ ({', '.join(map(str, position))})" if position and not fc else ""
    named = f" {class_name}" if class_name else ""
    label = f"#{k + 1} {what}{where}{named}\nvalue {value:.4g}"
    record = {
        "k": k,
        "kind": "joint" if joint else ("unit" if fc else "map"),
        "channel": channel,
        "class_name": class_name,
        "position": position,
        "value": value,
        **precision_record(projection, index, k),
    }
    return label, record


def precision_record(projection: Projection, index: int, k: int) -> dict[str, str]:
    """The number type a projection ran in, for manifests; and why, when a reduced-precision
    projection was redone in full precision."""
    used = projection.precision_at(index, k)
    if used == projection.precision:
        return {"precision": used}
    return {
        "precision": used,
        "precision_fallback": f"redone in {used}: in {projection.precision} its values left "
        "the type's range or its rounding error was estimated to show in the 8-bit picture",
    }


def _blank_reason(blanks: BlankReport | None, k: int) -> str:
    place = blanks.reached.get(k) if blanks is not None else None
    return f"signal zero below {place}" if place else "nothing reached the pixels"


def _class_name(
    projection: Projection, channel: int, categories: Sequence[str] | None
) -> str | None:
    """The class a unit stands for, when the layer has one channel per class (fc and
    logit layers, SqueezeNet's class-map convolution)."""
    if categories is None or channel < 0 or projection.layer_shape is None:
        return None
    if projection.layer_shape[0] != len(categories) or channel >= len(categories):
        return None
    return categories[channel].split(",")[0].strip()


def _unit_name(record: Mapping[str, Any]) -> str:
    """File-name part: ``k0_map481``, ``k0_unit5``, ``k0_joint_map3`` or ``k0_joint``."""
    channel = int(record["channel"])
    if record["kind"] == "joint":
        return f"k{record['k']}_joint" + (f"_map{channel}" if channel != JOINT_CHANNEL else "")
    return f"k{record['k']}_{record['kind']}{channel}"


def _resized(picture: np.ndarray, side: int) -> np.ndarray:
    """Fit ``picture`` in a ``side`` x ``side`` square (see :func:`render.scaled`), centred."""
    fitted = scaled(picture, side)
    square = np.empty((side, side, 3), dtype=np.uint8)
    square[...] = BACKGROUND
    top, left = (side - fitted.shape[0]) // 2, (side - fitted.shape[1]) // 2
    square[top : top + fitted.shape[0], left : left + fitted.shape[1]] = fitted
    return square


def _file_picture(picture: np.ndarray, caption: str | None) -> np.ndarray:
    """A per-projection file: enlarged by an integer factor to >= 128 px, optional caption."""
    factor = max(1, math.ceil(MIN_FILE_SIDE / max(1, min(picture.shape[:2]))))
    enlarged = picture.repeat(factor, axis=0).repeat(factor, axis=1)
    if caption is None:
        return enlarged
    strip = text_image(wrap_text(caption, enlarged.shape[1] - 2), FONT_SIZE)
    canvas = np.empty((enlarged.shape[0] + strip.shape[0] + 2, enlarged.shape[1], 3), np.uint8)
    canvas[...] = BACKGROUND
    canvas[: enlarged.shape[0]] = enlarged
    canvas[enlarged.shape[0] + 2 :, : strip.shape[1]] = strip[:, : enlarged.shape[1]]
    return canvas


def _overview(rgb: np.ndarray, fields: list[Box | None], labels: list[str]) -> np.ndarray:
    """The input at a readable size, each unit's field outlined in its colour and numbered
    where the number does not collide; beside it, a legend of every unit."""
    height, width = rgb.shape[:2]
    factor = OVERVIEW_SIDE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    smooth = factor <= SMOOTH_ENLARGE_LIMIT
    resample = Image.Resampling.LANCZOS if smooth else Image.Resampling.NEAREST
    picture = np.asarray(Image.fromarray(rgb).resize(size, resample)).copy()
    taken: list[Box] = []
    for k, unit_field in enumerate(fields):
        if unit_field is None:
            continue
        colour = UNIT_COLOURS[k % len(UNIT_COLOURS)]
        top, left, bottom, right = (round(v * factor) for v in unit_field)
        top, left = max(top, 0), max(left, 0)
        bottom, right = min(bottom, picture.shape[0]), min(right, picture.shape[1])
        picture = panels.outline(picture, (top, left, bottom, right), colour, BOX_WIDTH)
        number = text_image(str(k + 1), FONT_SIZE, colour=TEXT, background=colour, bold=True)
        spot = (top, left, top + number.shape[0], left + number.shape[1])
        fits = spot[2] <= picture.shape[0] and spot[3] <= picture.shape[1]
        if fits and not any(_overlaps(spot, other) for other in taken):
            picture[spot[0] : spot[2], spot[1] : spot[3]] = number
            taken.append(spot)
    entries = [
        (UNIT_COLOURS[k % len(UNIT_COLOURS)], label.split("\nblank")[0].replace("\nvalue", " ="))
        for k, label in enumerate(labels)
        if fields[k] is not None
    ]
    key = panels.legend(entries, LEGEND_WIDTH) if entries else None
    gap = PADDING * 2
    total_w = picture.shape[1] + (gap + LEGEND_WIDTH if key is not None else 0)
    total_h = max(picture.shape[0], key.shape[0] if key is not None else 0)
    canvas = np.empty((total_h, total_w, 3), dtype=np.uint8)
    canvas[...] = BACKGROUND
    canvas[: picture.shape[0], : picture.shape[1]] = picture
    if key is not None:
        left = picture.shape[1] + gap
        canvas[: key.shape[0], left : left + key.shape[1]] = key
    return canvas


def _no_input(layer: str) -> np.ndarray:
    return text_image(f"{layer}: input image not known (pass input_rgb)", FONT_SIZE)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _sheet(
    projection: Projection,
    layer: str,
    overview: np.ndarray,
    patches: list[np.ndarray | None],
    shown: list[np.ndarray],
    labels: list[str],
    options: FigureOptions,
    zoomed: bool,
    warning: str | None = None,
) -> tuple[np.ndarray, Box, list[tuple[Box, Box]]]:
    """Title, a warning line if any, overview, then rows of (patch | projection) pairs with
    headers and captions; ``zoomed``: some tile shows a receptive field rather than the
    whole input."""
    tile = options.tile
    count = len(shown)
    with_patch = any(p is not None for p in patches)
    pair_w = (2 * tile + PAIR_GAP) if with_patch else tile
    columns = max(1, min(count, math.ceil(math.sqrt(count))))
    rows = math.ceil(count / columns)
    caption_w = pair_w
    captions = [wrap_text(label, caption_w, SHEET_FONT_SIZE) for label in labels]
    caption_h = max(text_size(c, SHEET_FONT_SIZE)[1] for c in captions)
    cell_h = tile + PADDING + caption_h + CELL_GAP
    rule = projection.policy.rule
    header_projection = wrap_text(
        f"{projection.policy.reverse_rule.title} ({rule})", tile, HEADER_FONT_SIZE
    )
    header_h = text_size(header_projection, HEADER_FONT_SIZE)[1] + PADDING
    caption = projection.policy.activation_mode.caption if projection.policy.analogues else ""
    rule_note = f"{rule} rule, {caption}" if caption else f"{rule} rule"
    title = f"{layer}: {projection.selection.describe()}, {rule_note}, {_contrast_note(options)}"
    grid_w = columns * pair_w + (columns - 1) * CELL_GAP
    width = max(grid_w, overview.shape[1]) + 2 * PADDING
    title_text = wrap_text(title, width - 2 * PADDING, TITLE_FONT_SIZE)
    title_h = text_size(title_text, TITLE_FONT_SIZE)[1] + PADDING
    warning_text = wrap_text(warning, width - 2 * PADDING, HEADER_FONT_SIZE) if warning else ""
    warning_h = text_size(warning_text, HEADER_FONT_SIZE)[1] + PADDING if warning else 0
    title_h += warning_h
    note = wrap_text(_footer(zoomed, options, with_patch), width - 2 * PADDING, FONT_SIZE)
    note_h = text_size(note, FONT_SIZE)[1] + PADDING
    grid_top = PADDING + title_h + overview.shape[0] + 2 * PADDING
    height = grid_top + header_h + rows * cell_h + note_h
    sheet = np.empty((height, width, 3), dtype=np.uint8)
    sheet[...] = BACKGROUND
    draw_text(sheet, PADDING, PADDING, title_text, TITLE_FONT_SIZE)
    if warning:
        warning_top = PADDING + title_h - warning_h
        draw_text(sheet, PADDING, warning_top, warning_text, HEADER_FONT_SIZE, colour=WARNING_TEXT)
    top = PADDING + title_h
    overview_box = (top, PADDING, top + overview.shape[0], PADDING + overview.shape[1])
    sheet[top : top + overview.shape[0], PADDING : PADDING + overview.shape[1]] = overview
    for column in range(columns):
        left = PADDING + column * (pair_w + CELL_GAP)
        if with_patch:
            draw_text(sheet, left, grid_top, "image patch", HEADER_FONT_SIZE, colour=MUTED_TEXT)
        right = left + (tile + PAIR_GAP if with_patch else 0)
        draw_text(sheet, right, grid_top, header_projection, HEADER_FONT_SIZE, colour=MUTED_TEXT)
    boxes: list[tuple[Box, Box]] = []
    for k in range(count):
        left = PADDING + (k % columns) * (pair_w + CELL_GAP)
        top = grid_top + header_h + (k // columns) * cell_h
        patch_box: Box = (top, left, top + tile, left + tile)
        projection_left = left + (tile + PAIR_GAP if with_patch else 0)
        projection_box: Box = (top, projection_left, top + tile, projection_left + tile)
        patch = patches[k]
        if patch is not None:
            sheet[top : top + tile, left : left + tile] = _resized(patch, tile)
        sheet[top : top + tile, projection_left : projection_left + tile] = _resized(shown[k], tile)
        colour = UNIT_COLOURS[k % len(UNIT_COLOURS)]
        sheet[top + tile + 2 : top + tile + 5, left : left + pair_w] = colour
        draw_text(sheet, left, top + tile + PADDING, captions[k], SHEET_FONT_SIZE)
        boxes.append((patch_box, projection_box))
    draw_text(sheet, PADDING, height - note_h, note, FONT_SIZE, colour=MUTED_TEXT)
    return sheet, overview_box, boxes


def _contrast_note(options: FigureOptions) -> str:
    if options.contrast == "shared":
        return "one contrast scale for all tiles"
    return "each tile stretched on its own"


def _footer(zoomed: bool, options: FigureOptions, with_patch: bool) -> str:
    crop = (
        "tiles are each unit's receptive field (grey: outside the image)"
        if zoomed
        else "tiles show the whole input"
    )
    views = {
        "rgb": "projection colours scaled by the largest |value|, zero mid-grey",
        "signed": "channel sum; blue negative, white zero, red positive",
        "heat": "magnitude (L2 over channels); black zero",
        "overlay": "magnitude over the greyed input",
    }
    patch = "; left of each projection: the image patch it comes from" if with_patch else ""
    return f"{crop}; {views[options.display]}{patch}."
