"""The sections of a unit page: one per instrument, each a JSON record plus a picture.

A section maker takes a :class:`UnitContext` (the unit's statistics and top-k entries as the
scan's validated index holds them) and returns a :class:`Section`: the numbers (``data``,
what ``units/<map>.json``, ``deconvnet units`` and the explorer show), the facts the page
lists, links to other units, and the chart's pixels. Makers never write files: the site
writes each picture beside the unit page (``<map>_<key>.png``) and the JSON next to it, so
every face shows the same numbers. A section whose data the scan lacks says why
(``available`` false, ``note``) instead of drawing anything.

:data:`SCAN_SECTIONS` need only the scan (class selectivity, distribution). Instruments
that need the model (tuning curves, circuits) plug in through the same signature: the site
adds their makers to the list it is given (``build_site(..., sections=...)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, Field

from deconvnet.errors import InputError
from deconvnet.figures.units import distribution_chart, selectivity_chart
from deconvnet.inputs.documents import SCHEMA_CONFIG, Count, Text, read_document
from deconvnet.instruments.units import (
    SELECTIVE,
    class_selectivity,
    distribution,
    top_labels,
)

UNIT_FORMAT = "deconvnet-unit/1"
"""The format of ``units/<map>.json`` and of ``deconvnet units``' records."""


@dataclass(frozen=True)
class UnitContext:
    """What a section maker may read about one tracked map of a scanned layer."""

    layer: str
    shown: str
    channel: int
    stats: Mapping[str, Any]
    entries: Sequence[Mapping[str, Any]]
    document: Mapping[str, Any]
    """The scan's whole validated index (``labels``, ``histogram_edges``, …)."""
    draw: bool = True
    """Whether the section draws its chart (not when only its numbers are wanted)."""


@dataclass(frozen=True)
class Section:
    """One section of a unit page; ``data`` holds only JSON values."""

    key: str
    title: str
    available: bool
    note: str
    data: dict[str, Any] = field(default_factory=dict)
    facts: list[tuple[str, str]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    """``(text, URL from the site's root)``: other units this one relates to."""
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)

    def record(self, picture: str | None) -> dict[str, Any]:
        """The section as ``units/<map>.json`` stores it (``picture`` relative to the site)."""
        return {
            "key": self.key,
            "title": self.title,
            "available": self.available,
            "note": self.note,
            "data": self.data,
            "facts": [list(fact) for fact in self.facts],
            "links": [list(link) for link in self.links],
            "picture": picture,
        }


SectionMaker = Callable[[UnitContext], Section]

SELECTIVITY_NOTE = (
    "Per class, the mean over its images of this map's maximum; the index is "
    "(μ_top − μ_rest) / (μ_top + μ_rest), μ_top the largest class mean, μ_rest the mean of "
    "the others (Morcos et al. 2018): 0 alike for every class, 1 for one class only."
)
DISTRIBUTION_NOTE = (
    "How many images drive this map to each maximum (log-spaced bins, kept by the scan for "
    "every image): top-k values far right of the bulk are outliers, inside it typical."
)


def selectivity_section(unit: UnitContext) -> Section:
    """Class selectivity (:func:`~deconvnet.instruments.units.class_selectivity`)."""
    title = "Class selectivity"
    labels = unit.document.get("labels")
    sums = unit.stats.get("class_sums")
    if not labels or sums is None:
        return Section(
            "selectivity",
            title,
            False,
            "The scanned images have no class labels (a folder per class, an "
            ".npz y or WordNet ids in the file names), so no class selectivity.",
        )
    if not unit.stats.get("images"):
        return Section("selectivity", title, False, "No image was read.")
    result = class_selectivity(sums, labels["counts"], labels["names"])
    ranked = [int(entry["label"]) for entry in unit.entries if entry.get("label") is not None]
    majority = top_labels(ranked)
    top = result.top_class
    data = {
        **asdict(result),
        "top_class": top,
        "top_class_name": result.names[top],
        "top_k_majority": None if majority is None else asdict(majority),
    }
    index = "undefined" if result.index is None else f"{result.index:.3f}"
    facts = [
        (
            "selectivity index",
            index + (" (class selective)" if (result.index or 0) >= SELECTIVE else ""),
        ),
        (
            "top class",
            f"{result.names[top]} (mean {result.mu_top:.4g} over {result.counts[top]} images)"
            if result.index is not None
            else "none: the index is undefined (one class, or μ_top + μ_rest <= 0)",
        ),
        ("other classes", f"mean {result.mu_rest:.4g}"),
    ]
    if majority is not None:
        facts.append(
            (
                "top-k images",
                f"{majority.count} of {majority.k} are {result.names[majority.majority]}",
            )
        )
    return Section(
        "selectivity",
        title,
        True,
        SELECTIVITY_NOTE,
        data,
        facts,
        pixels=selectivity_chart(result) if unit.draw else None,
    )


def distribution_section(unit: UnitContext) -> Section:
    """The per-image maximum's distribution (:func:`~deconvnet.instruments.units.distribution`)."""
    title = "Distribution over the dataset"
    edges = unit.document.get("histogram_edges")
    counts = unit.stats.get("histogram")
    if edges is None or counts is None:
        return Section(
            "distribution",
            title,
            False,
            "This scan was made before histograms were kept: scan again.",
        )
    values = [float(entry["value"]) for entry in unit.entries]
    result = distribution(edges, counts, values)
    data = {key: value for key, value in asdict(result).items() if key != "edges"}
    facts = [
        ("images", str(result.images)),
        ("median maximum", _number(result.median)),
        ("99th percentile", _number(result.p99)),
    ]
    if values and result.top_share is not None:
        facts.append(
            (
                f"top-{len(values)}",
                f"from {min(values):.4g} to {max(values):.4g}, "
                f"above {100 * result.top_share:.1f}% of images",
            )
        )
    return Section(
        "distribution",
        title,
        True,
        DISTRIBUTION_NOTE,
        data,
        facts,
        pixels=distribution_chart(result) if unit.draw else None,
    )


SCAN_SECTIONS: tuple[SectionMaker, ...] = (selectivity_section, distribution_section)
"""The sections every site computes from the scan alone, in page order."""


class SectionRecord(BaseModel):
    """One section in ``units/<map>.json``."""

    model_config = SCHEMA_CONFIG
    key: Text
    title: Text
    available: bool
    note: Text
    data: dict[Text, Any]
    facts: list[Annotated[list[Text], Field(min_length=2, max_length=2)]]
    links: list[Annotated[list[Text], Field(min_length=2, max_length=2)]]
    picture: Text | None


class UnitDocument(BaseModel):
    """``units/<map>.json``: one unit's statistics and sections."""

    model_config = SCHEMA_CONFIG
    format: Text
    layer: Text
    layer_shown: Text
    map: Count
    stats: dict[Text, Any]
    sections: list[SectionRecord]


def unit_record(
    unit: UnitContext, sections: Sequence[tuple[Section, str | None]]
) -> dict[str, Any]:
    """The JSON record of a unit: its statistics (without the raw sums) and its sections."""
    stats = {
        key: value for key, value in unit.stats.items() if key not in ("histogram", "class_sums")
    }
    return {
        "format": UNIT_FORMAT,
        "layer": unit.layer,
        "layer_shown": unit.shown,
        "map": unit.channel,
        "stats": stats,
        "sections": [section.record(picture) for section, picture in sections],
    }


def read_unit(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``units/<map>.json`` read back as untrusted input: bounded and validated.

    Raises
    ------
    InputError
        Missing, unreadable or not a :class:`UnitDocument` of :data:`UNIT_FORMAT`.
    """
    document = read_document(Path(path), UnitDocument, what="unit record")
    if document.format != UNIT_FORMAT:
        raise InputError(f"{path}: field format: is not {UNIT_FORMAT}")
    return document.model_dump(mode="json")


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"
