"""The randomisation sanity check for one unit, per rule, as a unit's card shows it.

:func:`unit_sanity` runs the cascading randomisation of :mod:`deconvnet.instruments.sanity`
(Adebayo et al. 2018) for one unit of one image (a scan's top-1: the map's strongest unit
there) under each rule, and keeps per rule the Spearman rank correlation and SSIM of
each step's projection against the trained one. A rule whose picture explains the model
should lose that similarity as the layers go; one that stays near 1 shows the image, not
the weights. It is computed on request and kept in a :class:`~deconvnet.instruments.
cache.ResultCache` by (model digest, layer, unit, image digest, rules, seed), so a page
built twice asks once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from deconvnet.engine.capture import forward_until
from deconvnet.engine.layers import resolve_layer
from deconvnet.engine.rules import COMPARED_RULES, RULES
from deconvnet.engine.selection import Neuron
from deconvnet.errors import InputError, SelectionError
from deconvnet.inputs.documents import SCHEMA_CONFIG, Count, Text
from deconvnet.instruments.cache import (
    ResultCache,
    UnitRecord,
    tensor_digest,
    unit_header,
    unit_key,
)
from deconvnet.instruments.sanity import DEFAULT_SEED, cascading_randomisation, split_layers
from deconvnet.instruments.work import DEFAULT_MAX_WORK, check_work
from deconvnet.models.card import model_device

Progress = Callable[[int, int | None], None]
CACHE_KIND = "sanity"
CACHE_FORMAT = "deconvnet.unit-sanity/1"
MAX_RANDOMISED = 100_000


@dataclass(frozen=True)
class SanityStep:
    """One step of one rule: the layers randomised so far (how many, the last one) and
    the similarity to the trained projection (None where the unit no longer fires)."""

    randomised: int
    down_to: str | None
    spearman: float | None
    ssim: float | None
    status: str


@dataclass(frozen=True)
class UnitSanity:
    """Per rule, the steps of the cascading randomisation for one unit of one image.

    ``final`` is the last step (every layer the unit depends on randomised): the number a
    card shows beside the faithfulness gains; lower is better.
    """

    layer: str
    map: int
    position: tuple[int, int]
    seed: int
    steps: dict[str, tuple[SanityStep, ...]]
    cached: bool
    key: str

    def final(self, rule: str) -> SanityStep:
        return self.steps[rule][-1]

    def last_scored(self, rule: str) -> SanityStep | None:
        """The deepest randomisation step with a number (the unit may stop firing before
        the last step), or None when no randomised step has one."""
        scored = [s for s in self.steps[rule][1:] if s.spearman is not None]
        return scored[-1] if scored else None


class _StepRecord(BaseModel):
    model_config = SCHEMA_CONFIG
    randomised: Count
    down_to: Text | None
    spearman: float | None
    ssim: float | None
    status: Text


class UnitSanityRecord(UnitRecord):
    """A cached :class:`UnitSanity` (``sanity/KEY.json``), checked on reading."""

    position: tuple[Count, Count]
    seed: Count
    steps: dict[Text, Annotated[list[_StepRecord], Field(max_length=MAX_RANDOMISED)]]


def sanity_work(model: nn.Module, x: Tensor, layer: str | nn.Module, rules: int) -> int:
    """Projections :func:`unit_sanity` runs: per rule, one per randomised layer and one for
    the trained model."""
    return rules * (len(split_layers(model, x, layer).feeding) + 1)


def unit_sanity(
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module,
    channel: int,
    position: tuple[int, int] | None = None,
    *,
    rules: Sequence[str] = COMPARED_RULES,
    seed: int = DEFAULT_SEED,
    cache: ResultCache | None = None,
    progress: Progress | None = None,
    max_work: int | None = DEFAULT_MAX_WORK,
) -> UnitSanity:
    """Cascading randomisation for unit ``(channel, *position)`` of ``layer`` on ``x``
    (1, C, H, W), under each of ``rules``; ``position`` None: the map's strongest unit.

    The model is left as it was (the randomisation runs on a copy).

    Raises
    ------
    InputError
        A bad image, map, position or rule, or more work than ``max_work``.
    """
    unknown = [rule for rule in rules if rule not in RULES]
    if unknown or not rules:
        raise InputError(f"unknown rule {unknown[0] if unknown else None!r}")
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] != 1 or not x.is_floating_point():
        raise InputError("the sanity check needs one float image (1, C, H, W)")
    name, module = resolve_layer(model, layer)
    x = x.detach().to(model_device(model, x.device))
    position = _position(model, x, name, module, channel, position)
    key = unit_key(
        model,
        CACHE_FORMAT,
        name,
        channel,
        position=list(position),
        image=tensor_digest(x),
        rules=list(rules),
        seed=seed,
    )
    if cache is not None:
        hit = _from_cache(cache, key, name, channel, position, seed, rules)
        if hit is not None:
            return hit
    total = check_work(
        sanity_work(model, x, name, len(rules)),
        max_work,
        what="the sanity check",
        unit="projections",
    )
    done = 0
    if progress is not None:
        progress(0, total)
    steps = {}
    for rule in rules:
        offset = done

        def moved(step: int, _: int | None, offset: int = offset) -> None:
            if progress is not None:
                progress(offset + step + 1, total)

        result = cascading_randomisation(
            model, x, name, Neuron(channel, *position), rule=rule, seed=seed, progress=moved
        )
        steps[rule] = tuple(
            SanityStep(
                randomised=len(row.randomised),
                down_to=row.randomised[-1] if row.randomised else None,
                spearman=row.spearman,
                ssim=row.ssim,
                status=row.status,
            )
            for row in result.rows
        )
        done = offset + len(result.rows)
        if progress is not None:
            progress(done, total)
    found = UnitSanity(name, channel, position, seed, steps, cached=False, key=key)
    if cache is not None:
        cache.write(CACHE_KIND, key, sanity_record(found))
    return found


def _position(
    model: nn.Module,
    x: Tensor,
    name: str,
    module: nn.Module,
    channel: int,
    position: tuple[int, int] | None,
) -> tuple[int, int]:
    with torch.no_grad():
        maps: Tensor = forward_until(model, x, {name: module})[name]
    if maps.dim() != 4 or not 0 <= channel < maps.shape[1]:
        raise SelectionError(f"map {channel} is not a feature map of {name!r} {tuple(maps.shape)}")
    if position is None:
        flat = int(maps[0, channel].flatten().argmax())
        return divmod(flat, int(maps.shape[3]))
    y, x_pos = (int(v) for v in position)
    if not (0 <= y < maps.shape[2] and 0 <= x_pos < maps.shape[3]):
        raise SelectionError(f"position {position} is outside {name!r}'s map")
    return y, x_pos


def sanity_record(found: UnitSanity) -> dict[str, Any]:
    """``found`` as plain JSON values (what the cache keeps and a card's JSON shows)."""
    return {
        **unit_header(CACHE_FORMAT, found.key, found.layer, found.map),
        "position": list(found.position),
        "seed": found.seed,
        "steps": {
            rule: [
                {
                    "randomised": s.randomised,
                    "down_to": s.down_to,
                    "spearman": s.spearman,
                    "ssim": s.ssim,
                    "status": s.status,
                }
                for s in steps
            ]
            for rule, steps in found.steps.items()
        },
    }


def _from_cache(
    cache: ResultCache,
    key: str,
    layer: str,
    channel: int,
    position: tuple[int, int],
    seed: int,
    rules: Sequence[str],
) -> UnitSanity | None:
    record = cache.read(CACHE_KIND, key, UnitSanityRecord)
    if record is None or record.format != CACHE_FORMAT or record.key != key:
        return None
    if (record.layer, record.map, tuple(record.position), record.seed) != (
        layer,
        channel,
        position,
        seed,
    ) or set(record.steps) != set(rules):
        return None
    steps = {
        rule: tuple(
            SanityStep(s.randomised, s.down_to, s.spearman, s.ssim, s.status)
            for s in record.steps[rule]
        )
        for rule in rules
    }
    return UnitSanity(layer, channel, position, seed, steps, cached=True, key=key)
