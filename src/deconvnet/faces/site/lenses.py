"""Unit-page sections that need the model: which lens to trust (the faithfulness card, with
the unit's sanity scores) and the unit's own optimised image.

Each function returns a :data:`~deconvnet.faces.site.sections.SectionMaker` for
``build_site(sections=...)``, closing over the model, the scanned data and a
:class:`~deconvnet.instruments.cache.ResultCache`, so a site rebuilt with the same cache
computes nothing again. The numbers are the instruments' own records
(:func:`~deconvnet.figures.faithfulness.card_record`,
:func:`~deconvnet.figures.dream.dream_record`), the pictures their figures: the same as
``deconvnet faithfulness`` and ``deconvnet dream`` write.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from torch import nn

from deconvnet.faces.site.sections import Section, SectionMaker, UnitContext
from deconvnet.figures.dream import dream_figure, dream_record
from deconvnet.figures.faithfulness import card_figure, card_record
from deconvnet.inputs.datasets import ImageDataset
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.instruments import faithfulness as faith
from deconvnet.instruments.cache import ResultCache
from deconvnet.instruments.dream import OBJECTIVES, DreamSettings, dream
from deconvnet.instruments.unit_sanity import sanity_record, unit_sanity

FAITHFULNESS_TITLE = "Which lens to trust: faithfulness card"
FAITHFULNESS_NOTE = (
    "The pixels of the unit's receptive field, ordered by each rule's projection (|p| summed "
    "over channels), are deleted (mean pixel; blurred copy) or inserted into a blurred copy "
    "in 20 steps, and the unit's own activation is recorded; the same in 5 random orders. "
    "Gain over random: the area between the random curve and the rule's, divided by the "
    "unit's activation; positive means the rule's picture points at pixels the unit needs."
)
DREAM_TITLE = "The unit's optimised image"
DREAM_NOTE = (
    "An image optimised for this unit (Olah et al. 2017: Fourier-space, decorrelated "
    "colours, random jitter, scale and rotation each step, Adam), its receptive field "
    "outlined and enlarged; compared with the unit's strongest activation in the scanned "
    "data."
)


def faithfulness_section(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    preprocessing: Preprocessing,
    k: int | None = None,
    settings: faith.FaithfulnessSettings | None = None,
    sanity: bool = False,
    cache: ResultCache | None = None,
) -> SectionMaker:
    """The card of every unit over its top-``k`` scanned images (read from ``dataset``,
    the scanned data: each image's unit is checked against the scan's value), with the
    cascading-randomisation scores of its first image when ``sanity``."""
    chosen = settings or faith.FaithfulnessSettings()

    def make(unit: UnitContext) -> Section:
        images = faith.scan_images(unit.entries, dataset, unit.layer, unit.channel, k)
        if not images:
            return Section("faithfulness", FAITHFULNESS_TITLE, False, "The scan kept no image.")
        card = faith.faithfulness_card(
            model,
            unit.layer,
            unit.channel,
            images,
            settings=chosen,
            preprocessing=preprocessing,
            max_work=None,
            cache=cache,
        )
        checked = None
        if sanity:
            checked = unit_sanity(
                model,
                images[0].x,
                unit.layer,
                unit.channel,
                card.images[0].position,
                rules=chosen.rules,
                seed=chosen.seed,
                cache=cache,
                max_work=None,
            )
        data = card_record(card, display_name=unit.shown)
        data["sanity"] = None if checked is None else sanity_record(checked)
        if not card.active_images:
            note = "The unit does not fire on its scanned images: no card."
            return Section("faithfulness", FAITHFULNESS_TITLE, False, note, data)
        gains = card.gain
        facts = [
            (
                rule,
                f"gain over random {_signed(gains[faith.DELETION][rule])} (deletion, mean "
                f"pixel), {_signed(gains['insertion/blur'][rule])} (insertion)",
            )
            for rule in chosen.rules
        ]
        facts.append(("images", f"{len(card.active_images)} of {len(card.images)} fire"))
        pixels = card_figure(card, display_name=unit.shown, sanity=checked) if unit.draw else None
        return Section(
            "faithfulness", FAITHFULNESS_TITLE, True, FAITHFULNESS_NOTE, data, facts, pixels=pixels
        )

    return make


def dream_section(
    model: nn.Module,
    *,
    preprocessing: Preprocessing,
    maps: Mapping[str, Set[int]] | None = None,
    settings: DreamSettings | None = None,
    cache: ResultCache | None = None,
) -> SectionMaker:
    """The optimised image of the units ``maps`` names (layer -> maps; None: every unit),
    compared with the unit's scan maximum; other units' sections say how to ask for it."""
    chosen = settings or DreamSettings()

    def make(unit: UnitContext) -> Section:
        if maps is not None and unit.channel not in maps.get(unit.layer, ()):
            note = (
                "Not optimised for this site: rebuild with --optimise naming this map (or "
                "all), best with --device cuda."
            )
            return Section("dream", DREAM_TITLE, False, note)
        top1 = unit.stats.get("max")
        (result,) = dream(
            model,
            unit.layer,
            [unit.channel],
            settings=chosen,
            preprocessing=preprocessing,
            dataset_top1={unit.channel: float(top1)} if top1 is not None else None,
            cache=cache,
            max_work=None,
        )
        data = dream_record(result)
        facts = [
            ("objective", OBJECTIVES[chosen.objective]),
            ("activation", f"{result.compared:.4g} on the saved image"),
        ]
        if result.dataset_top1 is not None:
            verdict = "above" if result.beats_dataset else "NOT above"
            facts.append(("dataset's best", f"{verdict} its top-1, {result.dataset_top1:.4g}"))
        pixels = dream_figure([result], display_name=unit.shown) if unit.draw else None
        return Section("dream", DREAM_TITLE, True, DREAM_NOTE, data, facts, pixels=pixels)

    return make


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"
