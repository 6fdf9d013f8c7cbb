"""Build the static site of a top-k scan folder (what ``deconvnet topk`` wrote).

Reads ``topk_index.json`` (entries, activation statistics, provenance), the scan's
``manifest.json`` when present, and the per-tile PNGs; writes ``index.html``,
``layers/<layer>/index.html`` and ``layers/<layer>/units/<map>.html`` (stable URLs, the
layer named as the scan's sheets and tiles name it: its alias, else its dotted name), the
copied tiles and the stylesheet and script. Pages are rendered with Jinja2 (autoescaped).
Beside each unit page, ``<map>.json`` holds the unit's statistics and its sections
(:mod:`~deconvnet.faces.site.sections`: class selectivity, distribution, and whatever
other instruments the caller adds), each section's chart as ``<map>_<section>.png``.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from PIL import Image

from deconvnet.engine.receptive import LayerRow
from deconvnet.errors import InputError
from deconvnet.faces.manifest import MANIFEST_FILE, read_manifest
from deconvnet.faces.site.sections import (
    SCAN_SECTIONS,
    Section,
    SectionMaker,
    UnitContext,
    unit_record,
)
from deconvnet.figures.files import save_png, write_bytes, write_json
from deconvnet.figures.topk import INDEX_FILE, image_label
from deconvnet.figures.topk_index import read_index
from deconvnet.inputs.images import decode_image
from deconvnet.inputs.reading import read_regular_file
from deconvnet.models.naming import display_name
from deconvnet.storage.paths import file_inside, inside, separate_folders

MAX_TILE_BYTES = 64 << 20
"""Largest tile copied into a site (a scan's tiles are a few kB)."""
STATIC_FILES = ("site.css", "site.js")
PAGE_JPEG_QUALITY = 90
"""Tiles on unit pages: a JPEG at this quality is about a fifth of the PNG, and the map's own
(lossless) picture stays linked from the page."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SiteResult:
    """What :func:`build_site` wrote: the index page, the unit pages per layer, every file;
    the precision its tiles were projected in (:func:`precision_summary`)."""

    index: Path
    units: dict[str, list[Path]]
    files: list[Path]
    precision: str | None = None


def slug(layer: str) -> str:
    """The URL- and file-safe name of a layer (``fire2/concat`` -> ``fire2_concat``)."""
    return _UNSAFE.sub("_", layer).strip("_.") or "layer"


def unit_url(layer: str, channel: int) -> str:
    """The stable relative URL of a unit page, from the site's root; ``layer`` is the
    layer's shown name (:func:`display_names`)."""
    return f"layers/{slug(layer)}/units/{channel}.html"


def display_names(document: dict[str, Any]) -> dict[str, str]:
    """Each scanned layer's shown name (its alias, else its dotted name), as the scan
    recorded it for its sheets and tiles; keyed by the dotted name the index uses."""
    recorded = dict(document.get("metadata", {})).get("layers", {})
    recorded = recorded if isinstance(recorded, dict) else {}
    return {layer: str(recorded.get(layer, layer)) for layer in document["stats"]}


def read_scan(scan_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The scan's index document, validated (:func:`~deconvnet.figures.topk_index.read_index`)
    and with the tiles the pages show."""
    document = read_index(scan_dir)
    entries = document["entries"]
    if entries and "tile_file" not in entries[0]:
        path = Path(scan_dir) / INDEX_FILE
        raise InputError(f"{path} was written with --no-tiles; the site needs the tiles")
    return document


def scan_manifest(scan_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The scan's ``manifest.json``, validated (empty when the scan was made by the library)."""
    path = Path(scan_dir) / MANIFEST_FILE
    if not os.path.lexists(path):
        return {}
    return read_manifest(path)


@dataclass(frozen=True)
class Unit:
    """One tracked map: its statistics and its ranked entries (tiles relative to the site)."""

    layer: str
    channel: int
    stats: dict[str, Any]
    entries: list[dict[str, Any]]

    @property
    def dead(self) -> bool:
        """Never fired on the scanned images (its maximum never rose above zero)."""
        return not self.stats.get("fire_rate")

    @property
    def top(self) -> dict[str, Any] | None:
        return self.entries[0] if self.entries else None


def units_by_layer(document: dict[str, Any]) -> dict[str, list[Unit]]:
    """Every tracked map of every layer, in map order, with its entries by rank."""
    entries: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for entry in document["entries"]:
        entries[(entry["layer"], int(entry["map"]))].append(entry)
    layers: dict[str, list[Unit]] = {}
    for layer, records in document["stats"].items():
        layers[layer] = [
            Unit(
                layer,
                int(record["map"]),
                record,
                sorted(entries[(layer, int(record["map"]))], key=lambda e: int(e["rank"])),
            )
            for record in records
        ]
    return layers


def build_site(
    scan_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    layer_rows: Sequence[LayerRow] = (),
    input_size: tuple[int, int] | None = None,
    aliases: Mapping[str, str] | None = None,
    sections: Sequence[SectionMaker] = SCAN_SECTIONS,
    progress: Callable[[int, int | None], None] | None = None,
) -> SiteResult:
    """Write the site of ``scan_dir`` into ``out_dir`` (created; existing files replaced).

    ``layer_rows`` (from :func:`deconvnet.engine.receptive.layer_table` at ``input_size``)
    fill the model card's layer table, each layer named by its alias in ``aliases`` (the
    model's) if it has one; without rows it lists only the scanned layers. ``sections``
    make each unit page's sections, in order; ``progress`` gets ``(units done, units)``.
    """
    scan = Path(scan_dir)
    out = Path(out_dir)
    separate_folders(out, scan, out_flag="the site folder", source_flag="the scan folder")
    document = read_scan(scan)
    manifest = scan_manifest(scan)
    layers = units_by_layer(document)
    metadata = dict(document.get("metadata", {}))
    display = display_names(document)
    environment = _environment()
    written: list[Path] = []
    copied: set[str] = set()
    for entry in document["entries"]:
        for key in ("tile_file", "patch_file", "map_file"):
            name = entry.get(key)
            if isinstance(name, str) and name not in copied:  # a map's file serves k entries
                written.append(_copy_inside(scan, name, out))
                copied.add(name)
        for key in ("tile_file", "patch_file"):  # the unit page shows light JPEG copies
            written.append(_light_copy(out, entry[key]))
            entry[f"page_{key}"] = written[-1].relative_to(out.resolve()).as_posix()
    for name in STATIC_FILES:
        source = resources.files("deconvnet.faces.site").joinpath("static", name)
        target = out / "static" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        written.append(target)
    common = {
        "model": metadata.get("model") or manifest.get("model") or "a model",
        "display": display,
        "slug": slug,
        "fmt": _number,
        "percent": _percent,
        "image_label": image_label,
    }
    shown = {row.name: display_name(aliases or {}, row.name) for row in layer_rows}
    rows = [_row(row, {**shown, **display}, layers) for row in layer_rows] or [
        {
            "name": layer,
            "alias": display[layer],
            "type": "",
            "shape": "",
            "field": "",
            "scanned": True,
        }
        for layer in layers
    ]
    index = out / "index.html"
    _render(
        environment,
        "index.html",
        index,
        root="",
        rows=rows,
        layers=layers,
        scan=_provenance(document, manifest, input_size),
        **common,
    )
    written.append(index)
    units: dict[str, list[Path]] = {}
    total, done = sum(len(layer_units) for layer_units in layers.values()), 0
    if progress is not None:
        progress(0, total)
    for layer, layer_units in layers.items():
        folder = out / "layers" / slug(display[layer])
        made: dict[int, list[tuple[Section, str | None]]] = {}
        for unit in layer_units:
            context = UnitContext(
                layer, display[layer], unit.channel, unit.stats, unit.entries, document
            )
            made[unit.channel] = _sections(context, sections, out, folder)
            json_file = folder / "units" / f"{unit.channel}.json"
            written.append(write_json(unit_record(context, made[unit.channel]), json_file))
            written.extend(out / picture for _, picture in made[unit.channel] if picture)
            done += 1
            if progress is not None:
                progress(done, total)
        ordered = _by_selectivity(layer_units, made)
        _render(
            environment,
            "layer.html",
            folder / "index.html",
            root="../../",
            layer=layer,
            units=ordered,
            k=document["k"],
            summary=_summaries(made),
            sorted_by_selectivity=ordered is not layer_units,
            **common,
        )
        written.append(folder / "index.html")
        units[layer] = []
        for number, unit in enumerate(layer_units):
            page = folder / "units" / f"{unit.channel}.html"
            neighbours = {
                "previous": layer_units[number - 1].channel if number else None,
                "next": layer_units[number + 1].channel if number + 1 < len(layer_units) else None,
            }
            _render(
                environment,
                "unit.html",
                page,
                root="../../../",
                layer=layer,
                unit=unit,
                k=document["k"],
                sections=made[unit.channel],
                **neighbours,
                **common,
            )
            units[layer].append(page)
            written.append(page)
    return SiteResult(
        index=index, units=units, files=written, precision=precision_summary(document)
    )


def _sections(
    context: UnitContext, makers: Sequence[SectionMaker], out: Path, folder: Path
) -> list[tuple[Section, str | None]]:
    """Each section of a unit, its chart written beside the unit page (path from the root)."""
    made: list[tuple[Section, str | None]] = []
    for maker in makers:
        section = maker(context)
        picture = None
        if section.pixels is not None:
            path = folder / "units" / f"{context.channel}_{slug(section.key)}.png"
            save_png(section.pixels, path, palette=True)  # page weight
            picture = path.relative_to(out).as_posix()
        made.append((replace(section, pixels=None), picture))
    return made


def _selectivity(sections: Sequence[tuple[Section, str | None]]) -> dict[str, Any]:
    """The selectivity section's data, if the unit has one that is available."""
    found = next((s for s, _ in sections if s.key == "selectivity" and s.available), None)
    return found.data if found is not None else {}


def _summaries(made: Mapping[int, Sequence[tuple[Section, str | None]]]) -> dict[int, Any]:
    """Per map what the layer page shows and sorts by: selectivity index and top class."""
    return {channel: _selectivity(sections) for channel, sections in made.items()}


def _by_selectivity(
    layer_units: list[Unit], made: Mapping[int, Sequence[tuple[Section, str | None]]]
) -> list[Unit]:
    """The maps by selectivity index, most selective first (undefined last, then map
    order) when the scan is labelled; else ``layer_units`` itself, in map order."""
    indices = {channel: _selectivity(sections).get("index") for channel, sections in made.items()}
    if not any(data for data in (_selectivity(s) for s in made.values())):
        return layer_units
    return sorted(
        layer_units,
        key=lambda unit: (
            indices[unit.channel] is None,
            -(indices[unit.channel] or 0.0),
            unit.channel,
        ),
    )


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("deconvnet.faces.site", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _render(environment: jinja2.Environment, template: str, path: Path, **context: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(environment.get_template(template).render(**context), encoding="utf-8")


def _copy_inside(scan: Path, name: str, out: Path) -> Path:
    """Copy ``scan/name`` to ``out/name``: both resolved inside their folders (no ``..``,
    no absolute name, no symlink leaving either), the source a regular file."""
    source = file_inside(scan, name, what=f"the top-k index's file name (in {scan})")
    data = read_regular_file(source, MAX_TILE_BYTES, what="tile")
    return write_bytes(data, inside(out, name, what="the tile's name in the site"))


def _light_copy(out: Path, name: str) -> Path:
    """A JPEG copy (quality :data:`PAGE_JPEG_QUALITY`) of the site's tile ``out/name`` beside
    it, for the unit page: 18 photo tiles as PNG would weigh about 450 kB, as JPEG about 100."""
    source = inside(out, name, what="the tile's name in the site")
    pixels = decode_image(read_regular_file(source, MAX_TILE_BYTES, what="tile"), source)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=PAGE_JPEG_QUALITY)
    return write_bytes(buffer.getvalue(), source.with_suffix(".jpg"))


def _provenance(
    document: dict[str, Any], manifest: dict[str, Any], input_size: tuple[int, int] | None
) -> dict[str, Any]:
    metadata = document.get("metadata", {})
    return {
        "weights": metadata.get("weights") or manifest.get("weights"),
        "weights_sha256": metadata.get("weights_sha256") or manifest.get("weights_sha256"),
        "data": metadata.get("data") or manifest.get("data"),
        "dataset_fingerprint": document.get("dataset_fingerprint"),
        "k": document.get("k"),
        "maps": document.get("maps"),
        "seed": document.get("seed"),
        "images_scanned": document.get("images_scanned"),
        "images_read": document.get("images_read"),
        "skipped": len(document.get("skipped", [])),
        "rule": metadata.get("rule"),
        "activations": metadata.get("activations"),
        "precision": precision_summary(document),
        "input_size": "x".join(map(str, input_size)) if input_size else None,
    }


def precision_summary(document: dict[str, Any]) -> str | None:
    """The reverse pass's precision as asked, and how many tiles ran in each type
    (``auto (ran: bfloat16 × 1150, float32 × 2)``); None for a scan that recorded none."""
    asked = dict(document.get("metadata", {})).get("precision")
    counts = Counter(e["precision"] for e in document["entries"] if "precision" in e)
    if asked is None and not counts:
        return None
    ran = "ran: " + ", ".join(f"{name} × {count}" for name, count in counts.most_common())
    if asked is None:
        return ran
    return f"{asked} ({ran})" if counts else asked


def _row(row: LayerRow, display: dict[str, str], layers: dict[str, Any]) -> dict[str, Any]:
    field = ""
    if row.rf is not None:
        field = "global" if row.rf.is_global else f"{row.rf.size[0]}x{row.rf.size[1]}"
        if not row.rf.is_global:
            field += f", stride {row.rf.stride[0]}"
    return {
        "name": row.name,
        "alias": display.get(row.name, row.name),
        "type": row.type,
        "shape": "x".join(map(str, row.output_shape[1:])) if row.output_shape else "",
        "field": field,
        "scanned": row.name in layers,
    }


def _number(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"
