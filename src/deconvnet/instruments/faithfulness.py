"""Which lens explains the unit: deletion and insertion curves per reverse rule.

A projection claims that some pixels matter more to a unit than others. The card tests
that claim on the unit itself (Petsiuk et al. 2018's deletion and insertion metrics, read
at one unit instead of a class score): for the unit's strongest position in an image,
order the pixels of its receptive field by the magnitude of each rule's projection
(``|p|`` summed over channels; ties broken by one fixed random order), then

* **deletion**: replace them, most important first, in :attr:`FaithfulnessSettings.steps`
  equal steps, by the model's mean pixel (``deletion/mean``) or by a blurred copy of the
  image (``deletion/blur``), and record the unit's activation after each step;
* **insertion**: start from the blurred copy and put the original pixels back in the same
  order (``insertion/blur``);
* **random**: the same with random orders, the curve being the mean over
  :attr:`~FaithfulnessSettings.random_seeds` seeds.

Each curve's area (trapezoid over the fraction of pixels moved, 0 to 1) is divided by
the unit's activation on the untouched image. A faithful order makes the deletion area
small and the insertion area large; the **gain over random** is ``random − rule`` for
deletion and ``rule − random`` for insertion, so positive is better than chance in both.

Nothing outside the receptive field can change the unit, so only its pixels move, and the
network runs only on the smallest crop that holds them, aligned to the layer's grid
(:func:`~deconvnet.instruments.occlusion.splice.unit_crop`, checked equal to the whole
image on the untouched and on the fully deleted image before use). Every evaluation is a
batched forward pass that stops at the layer (:func:`~deconvnet.engine.capture.forward_until`);
step 0 of a deletion curve is the unit's activation on the image itself, and the last step
its activation on the fully deleted image, computed like any other step.

>>> card = faithfulness_card(model, "conv4", 12, [UnitImage(x)])   # doctest: +SKIP
>>> card.gain["deletion/mean"]["gradient"]        # mean over the images where it fires
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor, nn

from deconvnet.engine import guard
from deconvnet.engine.capture import forward_until, output_tensor
from deconvnet.engine.engine import Deconvnet
from deconvnet.engine.hooks import holding_model_lock
from deconvnet.engine.layers import resolve_layer
from deconvnet.engine.precision import FULL_PRECISION
from deconvnet.engine.receptive import Box, ReceptiveField, receptive_fields
from deconvnet.engine.rules import COMPARED_RULES, RULES
from deconvnet.engine.selection import Neuron
from deconvnet.errors import InputError, SelectionError
from deconvnet.inputs.datasets import ImageDataset
from deconvnet.inputs.documents import SCHEMA_CONFIG, Count, Text
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.instruments.cache import (
    ResultCache,
    UnitRecord,
    tensor_digest,
    unit_header,
    unit_key,
)
from deconvnet.instruments.occlusion.occlusion import mean_fill
from deconvnet.instruments.occlusion.splice import UnitCrop, matches, unit_crop
from deconvnet.instruments.topk.scan import TopKIndex
from deconvnet.instruments.work import DEFAULT_MAX_WORK, check_work
from deconvnet.models.card import batch_size_for, card_of, model_device

Progress = Callable[[int, int | None], None]

DEFAULT_STEPS = 20
DEFAULT_RANDOM_SEEDS = 5
DEFAULT_BATCH_SIZE = 64
"""Perturbed crops per forward pass."""
BLUR_SIGMA_AT_224 = 5.0
"""Gaussian blur of the blurred baseline, in pixels of a 224-pixel input (scaled with the
input's shorter side, never below :data:`MIN_BLUR_SIGMA`)."""
MIN_BLUR_SIGMA = 1.0
CROP_MAX_SHARE = 0.8
"""Run on the crop only when it is smaller than this share of the image."""
SCAN_VALUE_RTOL = 1e-4
"""An image whose unit differs from the scan's value by more than this (relative) is not
the image that was scanned (another file, other weights or preprocessing): refused."""
CROP_CHECKS = 4
"""Forward passes that check a crop: the untouched and the fully deleted image, each whole
and cropped."""
RANDOM_ORDER = "random"
PRECISION = FULL_PRECISION
"""The rules' projections that order the pixels run in full precision: an order is a
measurement (two near-equal pixels must not swap by rounding), and its one reverse pass per
image is little beside the curves' forward passes."""
MAX_STEPS = 1000
MAX_RANDOM_SEEDS = 100
MAX_CACHED_IMAGES = 1000
CACHE_KIND = "faithfulness"
CACHE_FORMAT = "deconvnet.faithfulness/1"


@dataclass(frozen=True)
class Perturbation:
    """One way of moving pixels: from what image, towards what.

    ``deletes``: start from the image and replace pixels by the ``baseline`` (``mean``:
    the model's mean pixel; ``blur``: a blurred copy); else start from the baseline and put
    the image's pixels back.
    """

    name: str
    description: str
    deletes: bool
    baseline: str


PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p
    for p in (
        Perturbation("deletion/mean", "deleted: replaced by the mean pixel", True, "mean"),
        Perturbation("deletion/blur", "deleted: replaced by a blurred copy", True, "blur"),
        Perturbation("insertion/blur", "inserted into a blurred copy", False, "blur"),
    )
}
"""Every curve a card draws, by name, in display order."""
DELETION = "deletion/mean"
"""The card's headline perturbation (the layer summary's first panel)."""


@dataclass(frozen=True)
class FaithfulnessSettings:
    """How a card is measured; part of every record, so two cards say how they compare.

    ``rules`` are names of the rule table; ``blur_sigma`` is in input pixels (None:
    :data:`BLUR_SIGMA_AT_224` scaled to the input); ``seed`` fixes the tie-breaking order
    (seed) and the random orders (``seed + 1`` … ``seed + random_seeds``).
    """

    steps: int = DEFAULT_STEPS
    random_seeds: int = DEFAULT_RANDOM_SEEDS
    rules: tuple[str, ...] = COMPARED_RULES
    blur_sigma: float | None = None
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        for name, low, high in (
            ("steps", 1, MAX_STEPS),
            ("random_seeds", 1, MAX_RANDOM_SEEDS),
            ("batch_size", 1, 1 << 16),
            ("seed", 0, 1 << 62),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InputError(f"{name} must be an integer in {low}..{high}, got {value!r}")
        if not self.rules or len(set(self.rules)) != len(self.rules):
            raise InputError(f"rules must be distinct names, got {self.rules!r}")
        unknown = [rule for rule in self.rules if rule not in RULES]
        if unknown:
            raise InputError(f"unknown rule {unknown[0]!r}; choose from {', '.join(RULES)}")
        if self.blur_sigma is not None and not (
            math.isfinite(self.blur_sigma) and self.blur_sigma > 0
        ):
            raise InputError(f"blur_sigma must be a positive number, got {self.blur_sigma!r}")

    @property
    def orders(self) -> tuple[str, ...]:
        """The rules, then :data:`RANDOM_ORDER`."""
        return (*self.rules, RANDOM_ORDER)

    def sigma_for(self, image_hw: tuple[int, int]) -> float:
        """The blur in pixels for an input of ``image_hw``."""
        if self.blur_sigma is not None:
            return self.blur_sigma
        return max(MIN_BLUR_SIGMA, BLUR_SIGMA_AT_224 * min(image_hw) / 224)

    def fractions(self) -> np.ndarray:
        """The x axis: share of the receptive field's pixels moved after each step."""
        return np.arange(self.steps + 1, dtype=np.float64) / self.steps


def image_work(settings: FaithfulnessSettings) -> int:
    """Forward passes (of at most one image each) and projections one image of a card
    costs: every perturbed image, the projections, and the checks of the crop."""
    orders = len(settings.rules) + settings.random_seeds
    perturbed = len(PERTURBATIONS) * (2 + orders * (settings.steps - 1))
    return perturbed + len(settings.rules) + 1 + CROP_CHECKS


@dataclass(frozen=True)
class UnitImage:
    """One image of a unit: the network input ``x`` (1, C, H, W), where the unit is
    (``position`` at the layer; None: the map's strongest unit, the first in raster order),
    a name for records, and the value a scan recorded there (checked, when given)."""

    x: Tensor
    position: tuple[int, int] | None = None
    name: str = ""
    expected: float | None = None


@dataclass(frozen=True, eq=False)
class ImageCurves:
    """The curves of one image.

    Attributes
    ----------
    position : the unit's ``(y, x)`` at the layer.
    box : the receptive field clipped to the image: the pixels that move
        (``pixels`` of them).
    activation : the unit on the untouched image (every deletion curve's step 0).
    curves : perturbation -> order (each rule, then ``"random"``) -> raw activations,
        one per step (``steps + 1``); the random curve is the mean of ``random_curves``.
    random_curves : perturbation -> ``(random_seeds, steps + 1)``, one row per seed.
    auc : perturbation -> order -> area under the curve divided by ``activation``;
        None when the unit does not fire (``activation <= 0``).
    gain : perturbation -> rule -> gain over random (positive: better than chance).
    crop : the input box the network ran on; None: the whole image.
    expected : the scan's value, when the image came from a scan.
    """

    name: str
    position: tuple[int, int]
    box: Box
    pixels: int
    activation: float
    curves: Mapping[str, Mapping[str, np.ndarray]]
    random_curves: Mapping[str, np.ndarray]
    auc: Mapping[str, Mapping[str, float | None]]
    gain: Mapping[str, Mapping[str, float | None]]
    crop: Box | None
    expected: float | None = None

    @property
    def active(self) -> bool:
        """The unit fires here, so its curves can be normalised."""
        return self.activation > 0


@dataclass(frozen=True, eq=False)
class FaithfulnessCard:
    """One unit's faithfulness over its images: per perturbation and rule, the mean area and
    the mean gain over random across the images where the unit fires (None if none)."""

    layer: str
    map: int
    images: tuple[ImageCurves, ...]
    settings: FaithfulnessSettings
    cached: bool = False
    key: str | None = None
    """The cache key (None when no cache was given)."""

    @property
    def active_images(self) -> tuple[ImageCurves, ...]:
        return tuple(image for image in self.images if image.active)

    @property
    def auc(self) -> dict[str, dict[str, float | None]]:
        return {
            p: {o: _mean(i.auc[p][o] for i in self.active_images) for o in self.settings.orders}
            for p in PERTURBATIONS
        }

    @property
    def gain(self) -> dict[str, dict[str, float | None]]:
        return {
            p: {r: _mean(i.gain[p][r] for i in self.active_images) for r in self.settings.rules}
            for p in PERTURBATIONS
        }

    def mean_curves(self) -> dict[str, dict[str, np.ndarray]]:
        """Perturbation -> order -> the curves divided by each image's activation, averaged
        over the images where the unit fires (empty when it fires nowhere)."""
        active = self.active_images
        if not active:
            return {}
        return {
            p: {
                o: np.mean([i.curves[p][o] / i.activation for i in active], axis=0)
                for o in self.settings.orders
            }
            for p in PERTURBATIONS
        }


@holding_model_lock  # forward hooks would be seen by other threads using the model
def faithfulness_card(
    model: nn.Module,
    layer: str | nn.Module,
    channel: int,
    images: Sequence[UnitImage],
    *,
    settings: FaithfulnessSettings | None = None,
    preprocessing: Preprocessing | None = None,
    progress: Progress | None = None,
    max_work: int | None = DEFAULT_MAX_WORK,
    cache: ResultCache | None = None,
) -> FaithfulnessCard:
    """The card of map ``channel`` of ``layer``, at its strongest unit in each image.

    Parameters
    ----------
    model : in eval mode (train-mode BatchNorm/Dropout is refused), left exactly as it was.
    layer : a dotted name, an alias or a module with feature maps, called once per forward.
    images : each image's input and (from a scan) the unit's position and recorded value.
    settings : steps, seeds, rules, blur (:class:`FaithfulnessSettings`).
    preprocessing : where the mean pixel comes from (:func:`~deconvnet.instruments.
        occlusion.mean_fill`); default the model card's.
    progress : ``(done, total)`` in units of :func:`image_work`, first with ``done = 0``.
    max_work : most units of work (:func:`image_work` per image) this call may run.
    cache : where cards are kept by (model digest, layer, map, settings, the mean pixel,
        each image's digest, position and scan value); a cached card costs nothing.

    Raises
    ------
    InputError
        Bad settings or images, a map or position outside the layer, too much work, or an
        image whose unit differs from the value its scan recorded.
    """
    settings = settings or FaithfulnessSettings()
    if not images:
        raise InputError("a faithfulness card needs at least one image")
    inputs = [_checked_input(image.x, number) for number, image in enumerate(images)]
    name, module = resolve_layer(model, layer)
    spec = preprocessing or card_of(model).preprocessing
    key = None
    if cache is not None:
        key = _card_key(model, name, channel, images, inputs, settings, _fill(spec, inputs[0]))
        hit = _card_from_cache(cache, key, name, channel, settings)
        if hit is not None:
            return hit
    total = check_work(
        len(images) * image_work(settings),
        max_work,
        what="the faithfulness card",
        unit="forward passes",
    )
    guard.require_eval(model)
    batch = batch_size_for(model, settings.batch_size, "the faithfulness card")
    settings = dataclasses.replace(settings, batch_size=batch)
    device = model_device(model)
    done = 0
    if progress is not None:
        progress(0, total)

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    results = []
    with guard.preserved(model):
        fields: dict[tuple[int, ...], ReceptiveField | None] = {}
        for number, (image, x) in enumerate(zip(images, inputs, strict=True)):
            x = x.to(device)
            if number == 0:
                guard.require_single_call(model, x, module, name)
            shape = tuple(x.shape)
            if shape not in fields:
                fields[shape] = receptive_fields(model, shape, device=device).get(name)
            fill = _fill(spec, x)
            results.append(
                _image_curves(
                    model, name, module, channel, image, x, fields[shape], fill, settings, advance
                )
            )
    card = FaithfulnessCard(name, channel, tuple(results), settings, key=key)
    if cache is not None and key is not None:
        cache.write(CACHE_KIND, key, _card_cache_record(card, key))
    return card


def scan_entries(index: TopKIndex) -> list[dict[str, Any]]:
    """The ranked entries of a scan made in Python, as the index file holds them (what
    :func:`scan_images` reads)."""
    return [
        {
            "layer": entry.layer,
            "map": entry.channel,
            "rank": entry.rank,
            "value": entry.value,
            "image_id": entry.image_id,
            "position": list(entry.position),
        }
        for entry in index.state.entries()
    ]


def scan_images(
    entries: Iterable[Mapping[str, Any]],
    dataset: ImageDataset,
    layer: str,
    channel: int,
    k: int | None = None,
) -> list[UnitImage]:
    """The top-``k`` images of map ``channel`` of ``layer`` in a scan's index entries (as
    :func:`deconvnet.figures.topk_index.read_index` returns them, or :func:`scan_entries`
    of a scan made in Python), read from ``dataset`` by
    their ``image_id``, with the scan's position and value (the card checks the value, so
    an image that changed or a dataset that is not the scanned one is refused).

    Raises
    ------
    InputError
        An entry without an image id, or one outside ``dataset``.
    """
    ranked = sorted(
        (e for e in entries if e.get("layer") == layer and e.get("map") == channel),
        key=lambda entry: int(entry["rank"]),
    )
    chosen = []
    for entry in ranked[:k] if k is not None else ranked:
        image_id = entry.get("image_id")
        if not isinstance(image_id, int) or not 0 <= image_id < len(dataset):
            raise InputError(
                f"the scan's entry {layer} map {channel} rank {entry['rank']} names image id "
                f"{image_id!r}, which the dataset ({len(dataset)} images) does not have"
            )
        y, x = (int(v) for v in entry["position"])
        chosen.append(
            UnitImage(
                dataset.input_image(image_id),
                (y, x),
                dataset.name(image_id),
                float(entry["value"]),
            )
        )
    return chosen


@dataclass(frozen=True)
class LayerFaithfulness:
    """Per layer, over its units that fire in at least one image: per perturbation and
    rule, the median gain over random, and the share of units whose gain is positive."""

    layer: str
    units: int
    median_gain: Mapping[str, Mapping[str, float | None]]
    positive: Mapping[str, Mapping[str, float | None]]
    median_auc: Mapping[str, Mapping[str, float | None]]


def summarise(cards: Sequence[FaithfulnessCard]) -> tuple[LayerFaithfulness, ...]:
    """One :class:`LayerFaithfulness` per layer, in the order the cards first name them."""
    layers: dict[str, list[FaithfulnessCard]] = {}
    for card in cards:
        layers.setdefault(card.layer, []).append(card)
    summary = []
    for layer, group in layers.items():
        fired = [card for card in group if card.active_images]
        rules = fired[0].settings.rules if fired else group[0].settings.rules
        orders = (*rules, RANDOM_ORDER)
        gains = {p: {r: [c.gain[p][r] for c in fired] for r in rules} for p in PERTURBATIONS}
        aucs = {p: {o: [c.auc[p][o] for c in fired] for o in orders} for p in PERTURBATIONS}
        summary.append(
            LayerFaithfulness(
                layer=layer,
                units=len(fired),
                median_gain={p: {r: _median(v) for r, v in g.items()} for p, g in gains.items()},
                positive={p: {r: _positive(v) for r, v in g.items()} for p, g in gains.items()},
                median_auc={p: {o: _median(v) for o, v in a.items()} for p, a in aucs.items()},
            )
        )
    return tuple(summary)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """``x`` (B, C, H, W) blurred by a separable Gaussian (radius ``ceil(3 sigma)``, at most
    one less than the image's shorter side), the borders mirrored."""
    radius = max(1, min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(x.dtype).to(x.device)
    channels = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)


def area(curve: np.ndarray, steps: int) -> float:
    """Trapezoid area under ``curve`` (``steps + 1`` values) over the fractions 0 to 1."""
    return float((curve[:-1] + curve[1:]).sum() / (2 * steps))


def ranked_order(magnitude: Tensor, tie_break: Tensor) -> Tensor:
    """Pixel indices by decreasing ``magnitude``; equal magnitudes in ``tie_break``'s order
    (a fixed permutation), so the many exact zeros of a rectified projection are not
    taken in raster order."""
    shuffled = magnitude[tie_break]
    return tie_break[torch.argsort(-shuffled, stable=True)]


def _image_curves(
    model: nn.Module,
    name: str,
    module: nn.Module,
    channel: int,
    image: UnitImage,
    x: Tensor,
    receptive: ReceptiveField | None,
    fill: Tensor,
    settings: FaithfulnessSettings,
    advance: Callable[[int], None],
) -> ImageCurves:
    height, width = x.shape[-2:]
    with torch.no_grad():
        maps: Tensor = forward_until(model, x, {name: module})[name]
    y, x_pos = _position(maps, channel, image, name)
    activation = float(maps[0, channel, y, x_pos])
    _check_expected(image, activation, name, channel)
    whole = (0, 0, height, width)
    box = receptive.box(y, x_pos, (height, width)) if receptive is not None else whole
    top, left, bottom, right = box
    pixels = (bottom - top) * (right - left)
    advance(1)
    orders = _orders(model, name, channel, (y, x_pos), x, box, settings)
    advance(len(settings.rules))
    blurred = gaussian_blur(x, settings.sigma_for((height, width)))
    baselines = {"mean": fill.expand_as(x), "blur": blurred}
    crop, unit = _crop(
        model, name, module, channel, x, baselines["mean"], box, receptive, (y, x_pos)
    )
    advance(CROP_CHECKS)

    def measure(batch: Tensor) -> Tensor:
        with torch.no_grad():
            return _unit(model, name, module, channel, unit, batch)

    curves, random_curves = _curves(measure, x, baselines, crop, box, orders, settings, advance)
    auc, gain = _areas(curves, activation, settings)
    return ImageCurves(
        name=image.name,
        position=(y, x_pos),
        box=box,
        pixels=pixels,
        activation=activation,
        curves=curves,
        random_curves=random_curves,
        auc=auc,
        gain=gain,
        crop=crop.box if crop is not None else None,
        expected=image.expected,
    )


def _checked_input(x: Tensor, number: int) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] != 1 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"image {number}: needs one float image (1, C, H, W), got {shape}")
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"image {number} holds NaN or infinite values")
    return x.detach().clone()


def _position(maps: Tensor, channel: int, image: UnitImage, name: str) -> tuple[int, int]:
    if maps.dim() != 4:
        raise InputError(f"layer {name!r} has no feature maps (output {tuple(maps.shape)})")
    if not 0 <= channel < maps.shape[1]:
        raise SelectionError(f"map {channel} is outside {name!r}'s {maps.shape[1]} maps")
    if image.position is None:
        flat = int(maps[0, channel].flatten().argmax())
        return divmod(flat, maps.shape[3])
    y, x = image.position
    if not (0 <= y < maps.shape[2] and 0 <= x < maps.shape[3]):
        raise SelectionError(
            f"position {image.position} is outside {name!r}'s {maps.shape[2]}x{maps.shape[3]} map"
        )
    return int(y), int(x)


def _check_expected(image: UnitImage, activation: float, name: str, channel: int) -> None:
    if image.expected is None:
        return
    if abs(activation - image.expected) > SCAN_VALUE_RTOL * max(1.0, abs(image.expected)):
        raise InputError(
            f"image {image.name or '?'}: {name} map {channel} reads {activation:.6g} here, the "
            f"scan recorded {image.expected:.6g}; is this the scanned data, with the scan's "
            "weights and preprocessing?"
        )


def _fill(spec: Preprocessing | None, x: Tensor) -> Tensor:
    """The model's mean pixel (1, C, 1, 1) in its input space."""
    values = mean_fill(spec) if spec is not None else (0.0,) * x.shape[1]
    fill = torch.tensor(values[: x.shape[1]], dtype=x.dtype, device=x.device)
    if fill.numel() != x.shape[1]:
        fill = fill[:1].expand(x.shape[1])
    return fill.view(1, -1, 1, 1)


def _orders(
    model: nn.Module,
    name: str,
    channel: int,
    position: tuple[int, int],
    x: Tensor,
    box: Box,
    settings: FaithfulnessSettings,
) -> dict[str, Tensor]:
    """Each rule's pixel order inside ``box`` (most important first), then the random ones
    (``random:0`` …)."""
    top, left, bottom, right = box
    pixels = (bottom - top) * (right - left)
    tie_break = torch.randperm(pixels, generator=torch.Generator().manual_seed(settings.seed))
    orders = {}
    for rule in settings.rules:
        with Deconvnet(model, rule, precision=PRECISION) as net:
            projection = net.project(x, name, Neuron(channel, *position)).images[0, 0]
        magnitude = projection[:, top:bottom, left:right].abs().sum(0).flatten().cpu()
        orders[rule] = ranked_order(magnitude, tie_break)
    for seed in range(settings.random_seeds):
        generator = torch.Generator().manual_seed(settings.seed + 1 + seed)
        orders[f"{RANDOM_ORDER}:{seed}"] = torch.randperm(pixels, generator=generator)
    return orders


def _crop(
    model: nn.Module,
    name: str,
    module: nn.Module,
    channel: int,
    x: Tensor,
    deleted: Tensor,
    box: Box,
    receptive: ReceptiveField | None,
    position: tuple[int, int],
) -> tuple[UnitCrop | None, tuple[int, int]]:
    """The crop to run on and the unit's place in it; ``(None, position)`` for the whole
    image, when the crop saves little or does not give the whole image's values on the
    untouched and the fully deleted image."""
    height, width = x.shape[-2:]
    if receptive is None or receptive.is_global:
        return None, position
    crop = unit_crop(receptive, *position, (height, width))
    c_top, c_left, c_bottom, c_right = crop.box
    top, left, bottom, right = box
    inside = c_top <= top and c_left <= left and c_bottom >= bottom and c_right >= right
    if not inside or crop.area >= CROP_MAX_SHARE * height * width:
        return None, position
    emptied = x.clone()
    emptied[..., top:bottom, left:right] = deleted[..., top:bottom, left:right]
    both = torch.cat([x, emptied])
    cropped = both[..., c_top:c_bottom, c_left:c_right]
    try:
        with torch.no_grad():
            want = _unit(model, name, module, channel, position, both)
            got = _unit(model, name, module, channel, crop.unit, cropped)
    except (InputError, RuntimeError):
        return None, position
    if not matches(got, want, float(want.abs().max())):
        return None, position
    return crop, crop.unit


def _unit(
    model: nn.Module,
    name: str,
    module: nn.Module,
    channel: int,
    position: tuple[int, int],
    batch: Tensor,
) -> Tensor:
    """The unit's activation for each image of ``batch``, the forward stopping at the layer."""
    y, x = position

    def keep(layer: str, output: Any) -> Tensor:
        out = output_tensor(layer, output)
        if out.dim() != 4 or not (y < out.shape[2] and x < out.shape[3]):
            raise InputError(f"the unit ({y}, {x}) is outside {layer!r}'s map {tuple(out.shape)}")
        return out[:, channel, y, x].detach().clone()

    return forward_until(model, batch, {name: module}, keep=keep)[name]


def _curves(
    unit: Callable[[Tensor], Tensor],
    x: Tensor,
    baselines: Mapping[str, Tensor],
    crop: UnitCrop | None,
    box: Box,
    orders: Mapping[str, Tensor],
    settings: FaithfulnessSettings,
    advance: Callable[[int], None],
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Run every perturbed image, batched: the rows are ``(perturbation, order, step)``,
    the two end steps being one image shared by every order, run once."""
    height, width = x.shape[-2:]
    c_top, c_left, c_bottom, c_right = crop.box if crop is not None else (0, 0, height, width)
    top, left, bottom, right = box
    inner = (slice(top - c_top, bottom - c_top), slice(left - c_left, right - c_left))
    base = x[0, :, c_top:c_bottom, c_left:c_right]
    region = base[:, inner[0], inner[1]].flatten(1)  # (C, pixels)
    starts, targets = [], []
    for perturbation in PERTURBATIONS.values():
        moved = baselines[perturbation.baseline][0, :, top:bottom, left:right].flatten(1)
        starts.append(region if perturbation.deletes else moved)
        targets.append(moved if perturbation.deletes else region)
    start, target = torch.stack(starts), torch.stack(targets)  # (P, C, pixels)
    rows, masks = _rows(orders, region.shape[1], settings.steps)
    masks = masks.to(x.device)
    jobs = [(p, r) for p in range(len(PERTURBATIONS)) for r in range(len(rows))]
    values = torch.empty(len(jobs), dtype=torch.float64)
    for first in range(0, len(jobs), settings.batch_size):
        chunk = jobs[first : first + settings.batch_size]
        kinds = torch.tensor([p for p, _ in chunk], device=x.device)
        mask = masks[torch.tensor([r for _, r in chunk], device=x.device)][:, None, :]
        moved = torch.where(mask, target[kinds], start[kinds])
        batch = base.expand(len(chunk), *base.shape).clone()
        batch[:, :, inner[0], inner[1]] = moved.view(*moved.shape[:2], bottom - top, right - left)
        values[first : first + len(chunk)] = unit(batch).to("cpu", torch.float64)
        advance(len(chunk))
    table = values.view(len(PERTURBATIONS), len(rows)).numpy()
    return _assemble(table, rows, orders, settings)


def _rows(
    orders: Mapping[str, Tensor], pixels: int, steps: int
) -> tuple[list[tuple[str, int]], Tensor]:
    """``(order, step)`` of every distinct perturbed image (``("", 0)`` and ``("",
    steps)``: the two ends, shared by every order) and which pixels each has moved."""
    counts = torch.div(torch.arange(steps + 1) * pixels + steps // 2, steps, rounding_mode="floor")
    rows: list[tuple[str, int]] = [("", 0), ("", steps)]
    masks = [torch.zeros(pixels, dtype=torch.bool), torch.ones(pixels, dtype=torch.bool)]
    for order_name, order in orders.items():
        rank = torch.empty(pixels, dtype=torch.long)
        rank[order] = torch.arange(pixels)
        for step in range(1, steps):
            rows.append((order_name, step))
            masks.append(rank < counts[step])
    return rows, torch.stack(masks)


def _assemble(
    table: np.ndarray,
    rows: list[tuple[str, int]],
    orders: Mapping[str, Tensor],
    settings: FaithfulnessSettings,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    index = {row: number for number, row in enumerate(rows)}
    middle = range(1, settings.steps)
    curves: dict[str, dict[str, np.ndarray]] = {}
    random_curves: dict[str, np.ndarray] = {}
    for p, name in enumerate(PERTURBATIONS):
        ends = table[p, index[("", 0)]], table[p, index[("", settings.steps)]]
        made = {
            order: np.array(
                [ends[0], *(table[p, index[(order, step)]] for step in middle), ends[1]],
                dtype=np.float64,
            )
            for order in orders
        }
        seeds = np.stack([made[order] for order in orders if order.startswith(RANDOM_ORDER)])
        curves[name] = {rule: made[rule] for rule in settings.rules}
        curves[name][RANDOM_ORDER] = seeds.mean(axis=0)
        random_curves[name] = seeds
    return curves, random_curves


def _areas(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    activation: float,
    settings: FaithfulnessSettings,
) -> tuple[dict[str, dict[str, float | None]], dict[str, dict[str, float | None]]]:
    auc: dict[str, dict[str, float | None]] = {}
    gain: dict[str, dict[str, float | None]] = {}
    for name, perturbation in PERTURBATIONS.items():
        if activation <= 0:
            auc[name] = {order: None for order in settings.orders}
            gain[name] = {rule: None for rule in settings.rules}
            continue
        areas = {o: area(c, settings.steps) / activation for o, c in curves[name].items()}
        auc[name] = dict(areas)
        sign = 1.0 if perturbation.deletes else -1.0
        gain[name] = {r: sign * (areas[RANDOM_ORDER] - areas[r]) for r in settings.rules}
    return auc, gain


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.median(present)) if present else None


def _positive(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(v > 0 for v in present) / len(present) if present else None


class _ImageRecord(BaseModel):
    model_config = SCHEMA_CONFIG
    name: Annotated[str, Field(max_length=4096)]
    position: tuple[Count, Count]
    box: tuple[Count, Count, Count, Count]
    pixels: Count
    activation: float
    expected: float | None
    crop: tuple[Count, Count, Count, Count] | None
    curves: dict[Text, dict[Text, Annotated[list[float], Field(max_length=MAX_STEPS + 1)]]]
    random_curves: dict[
        Text,
        Annotated[
            list[Annotated[list[float], Field(max_length=MAX_STEPS + 1)]],
            Field(max_length=MAX_RANDOM_SEEDS),
        ],
    ]


class FaithfulnessRecord(UnitRecord):
    """A cached card (``faithfulness/KEY.json``): every image's raw curves, from which the
    areas and gains are computed again on reading."""

    images: Annotated[list[_ImageRecord], Field(min_length=1, max_length=MAX_CACHED_IMAGES)]


def _card_key(
    model: nn.Module,
    name: str,
    channel: int,
    images: Sequence[UnitImage],
    inputs: Sequence[Tensor],
    settings: FaithfulnessSettings,
    fill: Tensor,
) -> str:
    return unit_key(
        model,
        CACHE_FORMAT,
        name,
        channel,
        settings={
            "steps": settings.steps,
            "random_seeds": settings.random_seeds,
            "rules": list(settings.rules),
            "blur_sigma": settings.blur_sigma,
            "seed": settings.seed,
        },
        fill=[float(v) for v in fill.flatten()],
        images=[
            {
                "digest": tensor_digest(x),
                "position": list(image.position) if image.position is not None else None,
                "expected": image.expected,
                "name": image.name,
            }
            for image, x in zip(images, inputs, strict=True)
        ],
    )


def _card_cache_record(card: FaithfulnessCard, key: str) -> dict[str, Any]:
    return {
        **unit_header(CACHE_FORMAT, key, card.layer, card.map),
        "images": [
            {
                "name": image.name,
                "position": list(image.position),
                "box": list(image.box),
                "pixels": image.pixels,
                "activation": image.activation,
                "expected": image.expected,
                "crop": list(image.crop) if image.crop is not None else None,
                "curves": {
                    p: {o: c.tolist() for o, c in orders.items()}
                    for p, orders in image.curves.items()
                },
                "random_curves": {p: c.tolist() for p, c in image.random_curves.items()},
            }
            for image in card.images
        ],
    }


def _card_from_cache(
    cache: ResultCache, key: str, name: str, channel: int, settings: FaithfulnessSettings
) -> FaithfulnessCard | None:
    """The cached card, or None when it is missing or does not hold what was asked (every
    perturbation, order and seed, each curve ``steps + 1`` long)."""
    record = cache.read(CACHE_KIND, key, FaithfulnessRecord)
    if record is None or (record.format, record.key, record.layer, record.map) != (
        CACHE_FORMAT,
        key,
        name,
        channel,
    ):
        return None
    length = settings.steps + 1
    images = []
    for image in record.images:
        shapes_ok = set(image.curves) == set(PERTURBATIONS) == set(image.random_curves) and all(
            set(image.curves[p]) == set(settings.orders)
            and all(len(c) == length for c in image.curves[p].values())
            and len(image.random_curves[p]) == settings.random_seeds
            and all(len(c) == length for c in image.random_curves[p])
            for p in PERTURBATIONS
        )
        if not shapes_ok:
            return None
        curves = {
            p: {o: np.asarray(image.curves[p][o], dtype=np.float64) for o in settings.orders}
            for p in PERTURBATIONS
        }
        auc, gain = _areas(curves, image.activation, settings)
        images.append(
            ImageCurves(
                name=image.name,
                position=image.position,
                box=image.box,
                pixels=image.pixels,
                activation=image.activation,
                curves=curves,
                random_curves={
                    p: np.asarray(image.random_curves[p], dtype=np.float64) for p in PERTURBATIONS
                },
                auc=auc,
                gain=gain,
                crop=image.crop,
                expected=image.expected,
            )
        )
    return FaithfulnessCard(name, channel, tuple(images), settings, cached=True, key=key)
