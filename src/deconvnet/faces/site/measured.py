"""The unit-page sections that need the model: tuning curves (always: the stimuli are
generated) and circuits (between scanned layers, re-reading the scanned images).

Both are measured once per layer for every tracked map (:func:`deconvnet.instruments.tuning.tuning`,
:func:`deconvnet.instruments.circuits.layer_circuits`) and handed to the site as section
makers, so a unit page, its ``units/<map>.json`` and the explorer show the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from deconvnet.errors import InputError
from deconvnet.faces.site.build import unit_url
from deconvnet.faces.site.sections import Section, SectionMaker, UnitContext
from deconvnet.figures.circuits import circuit_figure
from deconvnet.figures.tuning import tuning_figure
from deconvnet.inputs.datasets import ImageDataset
from deconvnet.instruments.circuits import (
    LayerCircuits,
    UnitCircuit,
    previous_layer,
    unit_circuit,
)
from deconvnet.instruments.topk.scan import TopKIndex
from deconvnet.instruments.topk.state import EMPTY_ID, LayerTopK, TopKState
from deconvnet.instruments.tuning import OSI_MIN, LayerTuning

TUNING_NOTE = (
    "Responses of this map (its maximum over positions) to generated stimuli at the model's "
    "input size and preprocessing: sinusoidal gratings, 16 orientations x 4 periods x 4 "
    "phases, and colour fields over a hue wheel x 3 saturations x 2 brightnesses. OSI is "
    "1 − circular variance of the orientation curve; orientation is measured across the "
    "stripes, counter-clockwise from image-right."
)
CIRCUITS_NOTE = (
    "Contribution of an upstream map = the sum over this unit's receptive field of its "
    "activation times the reverse signal of this unit reaching it ({rule} rule), averaged "
    "over this unit's top-k images; share = contribution / sum of |contributions|. "
    "Downstream: the maps of the next scanned layer whose input this map makes the largest "
    "share of."
)
CIRCUIT_RULE = "gradient"
"""The rule circuits are measured with, on pages and in the explorer: its contributions sum
to the unit's activation less the biases (the deconvnet's rule also credits inputs that a
ReLU switched off)."""


def tuning_section(tunings: Mapping[str, LayerTuning]) -> SectionMaker:
    """Tuning curves for the units of the layers in ``tunings`` (keyed by dotted name)."""

    def make(unit: UnitContext) -> Section:
        title = "Tuning curves"
        measured = tunings.get(unit.layer)
        if measured is None:
            return Section("tuning", title, False, "Not measured for this layer.")
        found = measured.unit(unit.channel)
        colour = found.preferred_colour
        facts = [
            ("preferred orientation", f"{found.preferred_orientation:.1f}°"),
            (
                "orientation selectivity",
                f"{found.osi:.3f}" + (" (oriented)" if found.osi >= OSI_MIN else ""),
            ),
            (
                "preferred frequency",
                f"{found.preferred_frequency:.3g} cycles/px "
                f"({found.preferred_period:.3g} px per cycle)",
            ),
            ("best grating response", f"{found.best_response:.4g}"),
            (
                "preferred colour",
                "none: no colour field drives this map"
                if colour is None
                else f"RGB {colour[0]}, {colour[1]}, {colour[2]} "
                f"(response {found.colour_response:.4g})",
            ),
        ]
        pixels = tuning_figure(found) if unit.draw else None
        return Section("tuning", title, True, TUNING_NOTE, found.to_dict(), facts, pixels=pixels)

    return make


def circuits_section(
    below: Mapping[str, LayerCircuits], above: Mapping[str, LayerCircuits], shown: Mapping[str, str]
) -> SectionMaker:
    """Circuits of the units of a scanned layer: ``below[layer]`` measures it against the
    scanned layer under it, ``above[layer]`` the scanned layer over it against it (dotted
    names); ``shown`` names layers as the site does, to link the linked maps' pages."""

    def make(unit: UnitContext) -> Section:
        title = "Circuit"
        under, over = below.get(unit.layer), above.get(unit.layer)
        if under is None and over is None:
            return Section(
                "circuits",
                title,
                False,
                "Circuits need two scanned layers, and the scanned images (deconvnet site --data).",
            )
        found = unit_circuit(under, over, unit.channel)
        tracked = {
            layer: {int(record["map"]) for record in records}
            for layer, records in unit.document["stats"].items()
        }
        facts, links = _links(found, tracked, shown)
        pixels = circuit_figure(found) if unit.draw else None
        note = CIRCUITS_NOTE.format(rule=found.rule)
        return Section("circuits", title, True, note, found.to_dict(), facts, links, pixels=pixels)

    return make


def _links(
    found: UnitCircuit, tracked: Mapping[str, set[int]], shown: Mapping[str, str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Facts for every linked map; a link to its page where the scan tracked it."""
    dotted = {name: layer for layer, name in shown.items()}
    facts: list[tuple[str, str]] = []
    links: list[tuple[str, str]] = []
    if found.images:
        facts.append(
            (
                "bias and rest",
                f"{found.rest:.4g} of a mean activation "
                f"{found.activation:.4g} over {found.images} images",
            )
        )
    for side, layer, items in (
        ("fed by", found.upstream_layer, found.upstream),
        ("feeds", found.downstream_layer, found.downstream),
    ):
        if layer is None:
            continue
        for link in items:
            text = f"{side} {layer} map {link.map}: share {link.share:+.1%}"
            if link.map in tracked.get(dotted.get(layer, layer), set()):
                links.append((text, unit_url(layer, link.map)))
            else:
                facts.append(
                    (
                        f"{side} {layer} map {link.map}",
                        f"share {link.share:+.1%} (not scanned: no page)",
                    )
                )
    return facts, links


def scan_index(document: Mapping[str, Any], dataset: ImageDataset) -> TopKIndex:
    """The scan's top-k rebuilt from its validated index, for instruments that re-read the
    ranked images (circuits). ``dataset`` must list what the scan listed (same fingerprint);
    the ranked images' digests are taken as they read now.

    Raises
    ------
    InputError
        Another dataset, or an entry whose image id lies outside it.
    """
    if dataset.fingerprint() != document.get("dataset_fingerprint"):
        raise InputError("--data is not the folder the scan was made from (its listing differs)")
    k = int(document["k"])
    layers: dict[str, LayerTopK] = {}
    for layer, records in document["stats"].items():
        channels = torch.tensor([int(r["map"]) for r in records], dtype=torch.long)
        layers[layer] = LayerTopK.empty(channels, k)
    columns = {
        layer: {int(c): i for i, c in enumerate(top.channels.tolist())}
        for layer, top in layers.items()
    }
    ranked: set[int] = set()
    for entry in document["entries"]:
        image_id = entry.get("image_id")
        if image_id is None or not 0 <= image_id < len(dataset):
            raise InputError("the scan's index lacks an image id inside --data")
        top = layers[entry["layer"]]
        column, rank = columns[entry["layer"]][int(entry["map"])], int(entry["rank"])
        top.values[rank, column] = float(entry["value"])
        top.image_ids[rank, column] = int(image_id)
        top.positions[rank, column] = torch.tensor(entry["position"], dtype=torch.long)
        ranked.add(int(image_id))
    digests = {image_id: dataset.read(image_id)[1] for image_id in sorted(ranked - {EMPTY_ID})}
    state = TopKState(
        k=k, layers=layers, images_seen=int(document.get("images_read") or 0), digests=digests
    )
    return TopKIndex(
        state=state,
        names={i: dataset.name(i) for i in sorted(ranked)},
        num_images=len(dataset),
        fingerprint=str(document["dataset_fingerprint"]),
        maps=str(document.get("maps")),
        seed=int(document.get("seed") or 0),
    )


def previous_scanned(model: nn.Module, layers: Sequence[str]) -> dict[str, str]:
    """For each scanned layer (dotted), the scanned layer under it, where there is one."""
    pairs = {layer: previous_layer(model, layers, layer) for layer in layers}
    return {layer: below for layer, below in pairs.items() if below is not None}
