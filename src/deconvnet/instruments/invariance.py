"""Invariance to translation, scale and rotation, the paper's Fig. 5 (Zeiler & Fergus 2014, §4.2).

Each image is transformed by a range of amounts; at each amount we record, per chosen
layer, the distance between the layer's feature vector for the original and for the
transformed image, and the probability of the image's true (or top) class.

**Distance.** The feature vector of a layer is its whole output for the image, flattened
(C x H x W values). The paper plots the "canonical distance" between the two vectors
without saying how it is normalised; here each vector is first divided by its own L2
norm, and the distance is the Euclidean distance of the unit vectors,
``|| f / ||f|| - g / ||g|| ||_2``: 0 for identical features, at most 2, at most sqrt(2)
for non-negative (post-ReLU) features, and comparable between layers of different size.
A zero vector is left as it is (its distance to a unit vector is 1). The plain
``|| f - g ||_2`` is kept too (:attr:`InvarianceResult.raw_distance`).

**Transforms and the canvas** (all on the network input, after preprocessing, so the
size the network sees never changes; amounts as in the paper):

* ``translate``: vertical shift by ``amount`` pixels, positive moves the content down;
* ``scale``: zoom by ``amount`` about the image centre (> 1 enlarges, < 1 shrinks);
* ``rotate``: rotation by ``amount`` degrees about the image centre, counter-clockwise
  as seen on screen.

Every output pixel samples the input at the inverse-transformed position with bilinear
interpolation. With ``canvas="fill"`` (the default) every position outside the input
reads the fill value (default: the model's mean pixel, zero after mean subtraction; see
:func:`~deconvnet.instruments.occlusion.occlusion.mean_fill`), so uncovered canvas is
"no information"; ``canvas="wrap"`` reads positions modulo the image size instead (a
circular shift for whole-pixel translations). The identity amount (0 px, factor 1, 0°)
reproduces the input exactly, and the original is evaluated in the same batch as its
transformed copies, so its distance is exactly 0.

The figure is :mod:`deconvnet.figures.invariance`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.engine.capture import flat_outputs
from deconvnet.engine.layers import resolve_layer
from deconvnet.errors import InputError
from deconvnet.inputs.images import deprocess
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.instruments.occlusion.occlusion import mean_fill
from deconvnet.instruments.work import DEFAULT_MAX_WORK, check_work
from deconvnet.models.card import require_any_batch

Transform = Literal["translate", "scale", "rotate"]
Canvas = Literal["fill", "wrap"]
Progress = Callable[[int, int | None], None]

TRANSFORMS: tuple[Transform, ...] = ("translate", "scale", "rotate")
IDENTITY: dict[str, float] = {"translate": 0.0, "scale": 1.0, "rotate": 0.0}
UNITS: dict[str, str] = {"translate": "pixels", "scale": "factor", "rotate": "degrees"}
DEFAULT_AMOUNTS: dict[str, tuple[float, ...]] = {
    "translate": tuple(float(v) for v in range(-60, 61, 10)),
    "scale": (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8),
    "rotate": tuple(float(v) for v in range(0, 361, 30)),
}
"""The paper's ranges (Fig. 5): +-60 px vertical shifts, scale 1 to 1.8, 0-360 degrees;
for a 224-pixel input (:func:`default_amounts` scales the shifts to other sizes)."""
REFERENCE_SIDE = 224
DEFAULT_BATCH_SIZE = 16
PROBABILITY_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True, eq=False)
class InvarianceResult:
    """Distances and probabilities for every image and amount.

    Attributes
    ----------
    transform, amounts : what was applied, ``amounts`` (A,) in :data:`UNITS`.
    layers : the layers, as ``named_modules()`` names.
    distance : layer -> Tensor (N, A), normalised Euclidean distance (see the module).
    raw_distance : layer -> Tensor (N, A), plain ``|| f - g ||_2``.
    feature_sizes : layer -> values in its feature vector (C x H x W).
    probability : Tensor (N, A), probability of ``targets[n]`` for the transformed image.
    top_class : LongTensor (N, A), the most probable class.
    targets : the class each image's probability is of; ``target_is_label`` says whether
        it was given (true label) or is the original's top class.
    canvas, fill : how uncovered canvas was filled (see the module).
    """

    transform: Transform
    amounts: tuple[float, ...]
    layers: tuple[str, ...]
    distance: dict[str, Tensor]
    raw_distance: dict[str, Tensor]
    feature_sizes: dict[str, int]
    probability: Tensor
    top_class: Tensor
    targets: tuple[int, ...]
    target_is_label: tuple[bool, ...]
    canvas: Canvas
    fill: tuple[float, ...]


def default_amounts(transform: Transform, side: int = REFERENCE_SIDE) -> tuple[float, ...]:
    """The paper's range of ``transform`` for an input of ``side`` pixels (shifts scaled)."""
    _check_transform(transform)
    if transform != "translate":
        return DEFAULT_AMOUNTS[transform]
    factor = side / REFERENCE_SIDE
    return tuple(float(round(v * factor)) for v in DEFAULT_AMOUNTS["translate"])


def transform_images(
    x: Tensor,
    transform: Transform,
    amount: float,
    *,
    fill: float | Sequence[float] = 0.0,
    canvas: Canvas = "fill",
) -> Tensor:
    """``x`` (B, C, H, W) transformed by ``amount`` (see the module for the conventions)."""
    _check_transform(transform)
    if canvas not in ("fill", "wrap"):
        raise InputError(f"canvas must be 'fill' or 'wrap', got {canvas!r}")
    if x.dim() != 4 or not x.is_floating_point():
        raise InputError(f"transform needs float images (B, C, H, W), got {tuple(x.shape)}")
    if not math.isfinite(amount) or (transform == "scale" and amount <= 0):
        raise InputError(f"{transform} amount must be finite (and > 0 for scale), got {amount}")
    height, width = x.shape[-2:]
    ys, xs = _source_grid(transform, float(amount), height, width, x.device)
    values = torch.as_tensor(fill, dtype=x.dtype, device=x.device).flatten()
    if values.numel() not in (1, x.shape[1]):
        raise InputError(f"fill has {values.numel()} values; the input has {x.shape[1]} channels")
    return _bilinear(x, ys, xs, values.expand(x.shape[1]), canvas)


def invariance(
    model: nn.Module,
    images: Sequence[Tensor],
    transform: Transform,
    amounts: Sequence[float],
    layers: Sequence[str | nn.Module],
    *,
    labels: Sequence[int | None] | None = None,
    fill: float | Sequence[float] | None = None,
    canvas: Canvas = "fill",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    max_work: int | None = DEFAULT_MAX_WORK,
) -> InvarianceResult:
    """Distances at ``layers`` and class probabilities of every image at every amount.

    Parameters
    ----------
    model : a classifier used as given (call ``.eval()`` yourself); its output is logits
        or probabilities (non-negative rows summing to 1), flattened per image.
    images : preprocessed inputs, each (1, C, H, W); sizes may differ.
    transform, amounts : see the module; amounts in :data:`UNITS`.
    layers : dotted names or modules; each output is flattened into a feature vector.
    labels : per image, its true class or None for the original's top class.
    fill : canvas value in the network's input space, one or one per channel; default 0
        (the mean pixel of a mean-subtracted input; use :func:`mean_fill` otherwise).
    progress : ``(transformed images done, total)``.
    max_work : most transformed images (``len(images) * len(amounts)``) this call may run
        (:func:`~deconvnet.instruments.work.check_work`); ``None`` for no ceiling.

    Raises
    ------
    InputError, LayerNotFoundError
    """
    _check_transform(transform)
    check_work(len(images) * len(amounts), max_work, what="invariance", unit="transformed images")
    if not images or not amounts or not layers:
        raise InputError("invariance needs at least one image, one amount and one layer")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    targets_given = list(labels) if labels is not None else [None] * len(images)
    if len(targets_given) != len(images):
        raise InputError(f"{len(targets_given)} labels for {len(images)} images")
    require_any_batch(model, "invariance")
    named = [resolve_layer(model, layer) for layer in layers]
    if len({name for name, _ in named}) != len(named):
        raise InputError(f"layers must be distinct, got {[name for name, _ in named]}")
    fill_values = (0.0,) if fill is None else tuple(np.atleast_1d(np.asarray(fill, float)))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    total, done = len(images) * len(amounts), 0
    distance = {name: torch.zeros(len(images), len(amounts)) for name, _ in named}
    raw = {name: torch.zeros(len(images), len(amounts)) for name, _ in named}
    sizes: dict[str, int] = {}
    probability = torch.zeros(len(images), len(amounts))
    top_class = torch.zeros(len(images), len(amounts), dtype=torch.long)
    targets: list[int] = []
    if progress is not None:
        progress(0, total)
    for n, image in enumerate(images):
        x = _check_image(image).to(device)
        target: int | None = targets_given[n]
        chunk = max(1, batch_size - 1)
        for start in range(0, len(amounts), chunk):
            batch_amounts = list(amounts)[start : start + chunk]
            batch = torch.cat(
                [x]
                + [
                    transform_images(x, transform, a, fill=fill_values, canvas=canvas)
                    for a in batch_amounts
                ]
            )
            features, output = _features(model, batch, named)
            probs = _as_probabilities(output)
            if target is None:
                target = int(probs[0].argmax())
            if not 0 <= target < probs.shape[1]:
                raise InputError(f"label {target} out of range: the model has {probs.shape[1]}")
            where = slice(start, start + len(batch_amounts))
            for name, flat in features.items():
                sizes[name] = flat.shape[1]
                distance[name][n, where] = normalised_distance(flat[:1], flat[1:]).cpu()
                raw[name][n, where] = torch.linalg.vector_norm(flat[1:] - flat[:1], dim=1).cpu()
            probability[n, where] = probs[1:, target].cpu()
            top_class[n, where] = probs[1:].argmax(dim=1).cpu()
            done += len(batch_amounts)
            if progress is not None:
                progress(done, total)
        assert target is not None  # amounts is not empty
        targets.append(target)
    return InvarianceResult(
        transform=transform,
        amounts=tuple(float(a) for a in amounts),
        layers=tuple(name for name, _ in named),
        distance=distance,
        raw_distance=raw,
        feature_sizes=sizes,
        probability=probability,
        top_class=top_class,
        targets=tuple(targets),
        target_is_label=tuple(label is not None for label in targets_given),
        canvas=canvas,
        fill=tuple(float(v) for v in fill_values),
    )


def normalised_distance(original: Tensor, transformed: Tensor) -> Tensor:
    """``|| f / ||f|| - g / ||g|| ||_2`` per row of ``transformed`` (B, D) against
    ``original`` (1, D) or (B, D); a zero row stays zero. Computed in float64."""
    f = _unit(original.double())
    g = _unit(transformed.double())
    distance: Tensor = torch.linalg.vector_norm(g - f, dim=1)
    return distance.float()


def previews(
    x: Tensor,
    transform: Transform,
    amounts: Sequence[float],
    spec: Preprocessing,
    *,
    fill: float | Sequence[float] | None = None,
    canvas: Canvas = "fill",
) -> list[np.ndarray]:
    """``(H, W, 3)`` uint8 RGB pictures of ``x`` (1, C, H, W) at each amount, as the network
    sees them (for the figure's first column)."""
    values = mean_fill(spec) if fill is None else fill
    return [
        deprocess(transform_images(x, transform, a, fill=values, canvas=canvas)[0], spec)
        for a in amounts
    ]


def _unit(rows: Tensor) -> Tensor:
    norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    return torch.where(norms > 0, rows / norms.clamp_min(torch.finfo(rows.dtype).tiny), rows)


def _source_grid(
    transform: str, amount: float, height: int, width: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Input coordinates (float64, pixel units) each output pixel samples."""
    rows = torch.arange(height, dtype=torch.float64, device=device)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float64, device=device)[None, :].expand(height, width)
    if transform == "translate":
        return rows - amount, cols
    cy, cx = (height - 1) / 2, (width - 1) / 2
    dy, dx = rows - cy, cols - cx
    if transform == "scale":
        return cy + dy / amount, cx + dx / amount
    if amount % 360 == 0:  # cos and sin of 2*pi*k are not exactly 1 and 0 in floating point
        return rows, cols
    theta = math.radians(amount)
    cos, sin = math.cos(theta), math.sin(theta)
    # y points down on screen: a counter-clockwise turn by theta moves input offset
    # (dy, dx) to (cos dy - sin dx, sin dy + cos dx); each output pixel reads the inverse
    return cy + cos * dy + sin * dx, cx - sin * dy + cos * dx


def _bilinear(x: Tensor, ys: Tensor, xs: Tensor, fill: Tensor, canvas: str) -> Tensor:
    """Sample ``x`` at float positions; outside reads ``fill`` or wraps around."""
    height, width = x.shape[-2:]
    y0, x0 = torch.floor(ys), torch.floor(xs)
    wy, wx = (ys - y0).to(x.dtype), (xs - x0).to(x.dtype)
    if canvas == "wrap":
        source = x
        offset = 0
    else:  # a one-pixel ring of fill around the input; positions beyond it clamp onto it
        source = fill.view(1, -1, 1, 1).expand(x.shape[0], -1, height + 2, width + 2).clone()
        source[:, :, 1:-1, 1:-1] = x
        offset = 1

    def at(row: Tensor, col: Tensor) -> Tensor:
        if canvas == "wrap":
            r, c = row.long() % height, col.long() % width
        else:
            r = (row + offset).clamp(0, height + 1).long()
            c = (col + offset).clamp(0, width + 1).long()
        return source[:, :, r, c]

    # at whole-pixel positions the weights are 1 and 0, so the input value is copied exactly
    top = at(y0, x0) * (1 - wx) + at(y0, x0 + 1) * wx
    bottom = at(y0 + 1, x0) * (1 - wx) + at(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def _features(
    model: nn.Module, batch: Tensor, named: Sequence[tuple[str, nn.Module]]
) -> tuple[dict[str, Tensor], Tensor]:
    """Each layer's output flattened (B, D) and the model's output (B, classes)."""
    captured, output = flat_outputs(model, batch, named)
    output = output[0] if isinstance(output, tuple | list) else output
    return captured, output.detach().flatten(1)


def _as_probabilities(output: Tensor) -> Tensor:
    sums = output.sum(dim=1)
    if bool((output >= 0).all()) and bool(((sums - 1).abs() < PROBABILITY_SUM_TOLERANCE).all()):
        return output
    return torch.softmax(output, dim=1)


def _check_image(image: Tensor) -> Tensor:
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[0] != 1:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise InputError(f"each image must be one preprocessed input (1, C, H, W), got {shape}")
    if not image.is_floating_point():
        raise InputError(f"images must be floating point, got {image.dtype}")
    return image.detach()


def _check_transform(transform: str) -> None:
    if transform not in TRANSFORMS:
        raise InputError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
