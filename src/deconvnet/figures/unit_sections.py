"""A unit's faithfulness card and optimised image as the files a unit page shows: each a
PNG and a JSON document beside it, in a folder the page lives in.

Pages (the static site, the explorer, a script) call these after computing the card
(:func:`~deconvnet.instruments.faithfulness.faithfulness_card`), the sanity scores
(:func:`~deconvnet.instruments.unit_sanity.unit_sanity`) and the optimised image
(:func:`~deconvnet.instruments.dream.dream`), so every face writes the same files with
the same numbers. File names are ``<stem>_faithfulness.png|json`` and
``<stem>_dream.png|json`` (the optimised image itself, 8-bit, at the model's input size,
beside ``<stem>_dream_figure.png``, its tile with the receptive field and the objective per
step); each JSON names its pictures relative to its own folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deconvnet.figures.dream import dream_figure, dream_record
from deconvnet.figures.faithfulness import card_figure, card_record
from deconvnet.figures.files import save_png, write_json
from deconvnet.instruments.dream import DreamResult
from deconvnet.instruments.faithfulness import FaithfulnessCard
from deconvnet.instruments.unit_sanity import UnitSanity, sanity_record
from deconvnet.storage.atomic import short_name
from deconvnet.storage.paths import component, inside

STEM_BYTES = 96
"""Longest file stem written (a longer one is shortened with a hash)."""


@dataclass(frozen=True)
class UnitSection:
    """What one section of a unit page was written as: its picture, its JSON document, and
    the document's content (for a page template or a ``units/<map>.json``)."""

    picture: Path
    document: Path
    record: dict[str, Any]


def unit_stem(layer: str, channel: int) -> str:
    """``conv4_map64``: one path component for map ``channel`` of ``layer`` (a display name
    or a dotted name), shortened with a hash when long."""
    return short_name(component(f"{layer}_map{channel}"), STEM_BYTES)


def write_card_section(
    card: FaithfulnessCard,
    folder: str | Path,
    *,
    stem: str | None = None,
    display_name: str | None = None,
    sanity: UnitSanity | None = None,
) -> UnitSection:
    """The card's figure (with the sanity scores when given) and its JSON record
    (:func:`~deconvnet.figures.faithfulness.card_record`, plus ``sanity`` and ``figure``)."""
    name = stem or unit_stem(display_name or card.layer, card.map)
    picture = inside(Path(folder), f"{name}_faithfulness.png", what="card figure")
    document = inside(Path(folder), f"{name}_faithfulness.json", what="card record")
    record = card_record(card, display_name=display_name)
    record["figure"] = picture.name
    record["sanity"] = (
        None if sanity is None else {**sanity_record(sanity), "cached": sanity.cached}
    )
    save_png(card_figure(card, display_name=display_name, sanity=sanity), picture)
    write_json(record, document)
    return UnitSection(picture, document, record)


def write_dream_section(
    result: DreamResult,
    folder: str | Path,
    *,
    stem: str | None = None,
    display_name: str | None = None,
) -> UnitSection:
    """The optimised image (``picture``), its tile and trajectory (``figure`` in the
    record) and the JSON record (:func:`~deconvnet.figures.dream.dream_record`)."""
    name = stem or unit_stem(display_name or result.layer, result.map)
    picture = inside(Path(folder), f"{name}_dream.png", what="optimised image")
    figure = inside(Path(folder), f"{name}_dream_figure.png", what="dream figure")
    document = inside(Path(folder), f"{name}_dream.json", what="dream record")
    record = dream_record(result, image_file=picture.name)
    record["figure"] = figure.name
    record["layer_alias"] = display_name
    save_png(result.image, picture)
    save_png(dream_figure([result], display_name=display_name), figure)
    write_json(record, document)
    return UnitSection(picture, document, record)
