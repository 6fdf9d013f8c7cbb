"""The schema of ``topk_index.json`` (written by :func:`deconvnet.figures.topk.render`), for
reading it back as untrusted input: a scan folder is something people download and share.

:func:`read_index` is the one reader (the static site, the explorer): bounded and
validated by :func:`~deconvnet.inputs.documents.read_document`, then checked across
fields (every entry's map has statistics, ranks below ``k``, no entry twice, tiles for all
entries or none). File names inside (``tile_file``, ``patch_file``, ``map_file``, the
sheets) are only checked to be strings here; whoever opens them resolves them with
:func:`deconvnet.storage.paths.inside`.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator

from deconvnet.errors import InputError
from deconvnet.figures.topk import INDEX_FILE, INDEX_FORMAT
from deconvnet.inputs.documents import (
    SCHEMA_CONFIG,
    Count,
    Integer,
    Text,
    read_document,
)

MAX_K = 1 << 16
"""Largest ``k`` a scan may claim; the command line allows far less."""
Box = tuple[Integer, Integer, Integer, Integer]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Entry(BaseModel):
    """One ranked activation and where its tiles are."""

    model_config = SCHEMA_CONFIG
    layer: Text
    map: Count
    rank: Annotated[int, Field(ge=0, lt=MAX_K)]
    value: float
    projected_value: float | None = None
    precision: Text | None = None
    image: Text
    image_id: Count | None = None
    label: Count | None = None
    position: tuple[Count, Count]
    crop_box: Box | None = None
    field_box: Box | None = None
    sheet: Text | None = None
    sheet_projection_box: Box | None = None
    sheet_patch_box: Box | None = None
    tile_file: Text | None = None
    patch_file: Text | None = None
    map_file: Text | None = None


class MapRecord(BaseModel):
    """A tracked map's statistics: every field present, ``None`` where no image was read."""

    model_config = SCHEMA_CONFIG
    map: Count
    images: Count | None
    max: float | None
    mean: float | None
    fire_rate: Fraction | None
    histogram: list[Count] | None = None
    class_sums: list[float] | None = None


class ScanLabels(BaseModel):
    """The classes of a labelled scan: keys as read (folder, WordNet id, ``y``), names as
    shown, images read per class."""

    model_config = SCHEMA_CONFIG
    source: Text
    classes: list[Text]
    names: list[Text]
    counts: list[Count]

    @model_validator(mode="after")
    def _one_per_class(self) -> ScanLabels:
        if not self.classes or len({len(self.classes), len(self.names), len(self.counts)}) > 1:
            raise ValueError("classes, names and counts must be non-empty and of one length")
        return self


class Skipped(BaseModel):
    model_config = SCHEMA_CONFIG
    image: Text
    error: Text


class Metadata(BaseModel):
    """What the command line stored about the model and the run (all optional)."""

    model_config = SCHEMA_CONFIG
    model: Text | None = None
    weights: Text | None = None
    weights_sha256: Text | None = None
    data: Text | None = None
    rule: Text | None = None
    precision: Text | None = None
    layers: dict[Text, Text] = Field(default_factory=dict)


class TopKIndexDocument(BaseModel):
    """``topk_index.json``, format :data:`~deconvnet.figures.topk.INDEX_FORMAT`."""

    model_config = SCHEMA_CONFIG
    format: Text
    k: Annotated[int, Field(ge=1, le=MAX_K)]
    maps: Text | None = None
    seed: Integer | None = None
    images_scanned: Count | None = None
    images_read: Count | None = None
    dataset_fingerprint: Text | None = None
    dataset_content: Text | None = None
    contrast: Text | None = None
    display: Text | None = None
    skipped: list[Skipped] = Field(default_factory=list)
    sheets: dict[Text, Text] = Field(default_factory=dict)
    sheet_pages: dict[Text, list[Text]] = Field(default_factory=dict)
    metadata: Metadata = Field(default_factory=Metadata)
    histogram_edges: list[float] | None = None
    labels: ScanLabels | None = None
    stats: dict[Text, list[MapRecord]]
    entries: list[Entry]

    @field_validator("format")
    @classmethod
    def _this_format(cls, value: str) -> str:
        if value != INDEX_FORMAT:
            raise ValueError(f"is not {INDEX_FORMAT} (an older or other deconvnet?)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TopKIndexDocument:
        maps = {(layer, record.map) for layer, records in self.stats.items() for record in records}
        if sum(len(records) for records in self.stats.values()) != len(maps):
            raise ValueError("stats list a map twice")
        seen: set[tuple[str, int, int]] = set()
        for number, entry in enumerate(self.entries):
            key = (entry.layer, entry.map, entry.rank)
            if (entry.layer, entry.map) not in maps:
                raise ValueError(f"entries[{number}] is of a map without statistics")
            if entry.rank >= self.k:
                raise ValueError(f"entries[{number}].rank is not below k={self.k}")
            if key in seen:
                raise ValueError(f"entries[{number}] repeats a layer, map and rank")
            seen.add(key)
        self._check_summaries()
        tiles = {(entry.tile_file is None, entry.patch_file is None) for entry in self.entries}
        if len(tiles) > 1 or tiles - {(True, True), (False, False)}:
            raise ValueError("entries must all name both tiles (tile_file, patch_file) or none")
        return self

    def _check_summaries(self) -> None:
        """Histograms over the declared edges, counting each map's images; class sums and
        entry labels for the declared classes only."""
        edges = self.histogram_edges
        if edges is not None and any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError("histogram_edges must ascend")
        classes = len(self.labels.classes) if self.labels is not None else 0
        for layer, records in self.stats.items():
            for number, record in enumerate(records):
                where = f"stats[{layer!r}][{number}]"
                if record.histogram is not None:
                    if edges is None or len(record.histogram) != len(edges) + 1:
                        raise ValueError(f"{where}.histogram does not match histogram_edges")
                    if sum(record.histogram) != (record.images or 0):
                        raise ValueError(f"{where}.histogram does not count its images")
                if (record.class_sums is not None) != bool(classes) or (
                    record.class_sums is not None and len(record.class_sums) != classes
                ):
                    raise ValueError(f"{where}.class_sums must hold one sum per class of labels")
        for number, entry in enumerate(self.entries):
            if entry.label is not None and entry.label >= classes:
                raise ValueError(f"entries[{number}].label is not a class of labels")


def read_index(scan_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The scan's index as plain JSON values, validated (fields absent from the file stay
    absent).

    Raises
    ------
    InputError
        No index, or one that is not a valid :class:`TopKIndexDocument` (one line naming
        the field).
    """
    path = Path(scan_dir) / INDEX_FILE
    if not path.exists():
        raise InputError(f"{scan_dir} has no {INDEX_FILE}; run 'deconvnet topk' into it first")
    document = read_document(path, TopKIndexDocument, what="top-k index")
    return document.model_dump(mode="json", exclude_unset=True)
