"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps").

Cascading randomisation: re-initialise the weights from the top layer down, one layer more
at each step, and recompute the same projection (the seeds chosen on the trained model:
same channel and position). A method that explains the model should change as its weights
go; one that only reflects the image (edge detection) stays similar. Similarity is the
Spearman rank correlation and SSIM of the absolute-value maps (channels summed, divided by
their maximum, so in [0, 1]) against the trained model's projection.

The model is deep-copied once (memory: one extra copy of its parameters); the caller's
model is never touched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.engine.engine import Deconvnet, resolve_layer
from deconvnet.engine.projection import Projection
from deconvnet.engine.receptive import Box, receptive_fields
from deconvnet.engine.selection import Mask, Neuron, Selection, Threshold, Unit
from deconvnet.errors import InputError

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_DATA_RANGE = 1.0
DEFAULT_SEED = 0


def spearman(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """Spearman's rank correlation (ties get their average rank); NaN if either is constant."""
    x = _ranks(_flat(a))
    y = _ranks(_flat(b))
    if x.size != y.size:
        raise InputError(f"spearman needs equal sizes, got {x.size} and {y.size}")
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 0 else math.nan


def ssim(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """Mean SSIM (Wang et al. 2004) of two (H, W) images in [0, 1].

    Gaussian window 11, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1; population
    (co)variances; the mean is over positions where the window fits inside the image
    (as scikit-image's ``structural_similarity(..., gaussian_weights=True,
    use_sample_covariance=False, data_range=1)``). Images smaller than 11 pixels use the
    largest odd window that fits.
    """
    x, y = _image(a), _image(b)
    if x.shape != y.shape:
        raise InputError(f"ssim needs equal shapes, got {x.shape} and {y.shape}")
    size = min(SSIM_WINDOW, *(s if s % 2 else s - 1 for s in x.shape))
    if size < 1:
        raise InputError(f"ssim needs images of at least 1x1, got {x.shape}")
    kernel = _gaussian(size)
    mu_x, mu_y = _filter(x, kernel), _filter(y, kernel)
    var_x = _filter(x * x, kernel) - mu_x**2
    var_y = _filter(y * y, kernel) - mu_y**2
    cov = _filter(x * y, kernel) - mu_x * mu_y
    c1 = (SSIM_K1 * SSIM_DATA_RANGE) ** 2
    c2 = (SSIM_K2 * SSIM_DATA_RANGE) ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(value.mean())


def saliency_map(projection: Tensor | np.ndarray) -> np.ndarray:
    """``(C, H, W)`` projection to the ``(H, W)`` map compared: sum of |x| over channels,
    divided by its maximum (all zero stays zero)."""
    values = np.abs(np.asarray(_flat_tensor(projection), dtype=np.float64)).sum(axis=0)
    peak = values.max()
    return cast(np.ndarray, values / peak) if peak > 0 else values


@dataclass(frozen=True)
class SanityRow:
    """One cascading step: the layers randomised so far (top first) and the similarity."""

    step: int
    randomised: tuple[str, ...]
    spearman: float
    ssim: float
    spearman_signed: float


@dataclass(frozen=True, eq=False)
class SanityResult:
    """Rows (step 0 = trained model) and each step's projection (S+1, K, C, H, W)."""

    rows: tuple[SanityRow, ...]
    projections: Tensor
    layer: str
    seeds: tuple[str, ...]


def cascading_randomisation(
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module,
    select: Selection,
    *,
    rule: str = "zeiler",
    seed: int = DEFAULT_SEED,
    progress: Callable[[int, int | None], None] | None = None,
) -> SanityResult:
    """Randomise ``model``'s layers top-down, one more per step, re-projecting each time.

    Layers are the modules holding parameters, in ``named_modules()`` order, reversed.
    New weights are Gaussian with each tensor's own standard deviation (seeded by ``seed``),
    so activation scales stay comparable. Metrics are averaged over the ``K`` seeds and
    taken inside each seed's receptive-field box (where the projection can be non-zero).
    """
    name, _ = resolve_layer(model, layer)
    x = x[:1]
    with Deconvnet(model, rule=rule) as net:
        original = net.project(x, name, select)
    fixed = _fixed_selections(original, net, x, name)
    boxes = _boxes(model, x, name, fixed)
    layers = [n for n, m in model.named_modules() if any(True for _ in m.parameters(False))]
    if not layers:
        raise InputError("the model has no parameters to randomise")
    work = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    projections = [original.images[0].cpu()]
    rows = [SanityRow(0, (), 1.0, 1.0, 1.0)]
    total = len(layers)
    for step, layer_name in enumerate(reversed(layers), start=1):
        _randomise(work.get_submodule(layer_name), generator)
        with Deconvnet(work, rule=rule) as net:
            images = torch.stack([net.project(x, name, s).images[0, 0] for s in fixed]).cpu()
        projections.append(images)
        rows.append(_row(step, tuple(reversed(layers))[:step], projections[0], images, boxes))
        if progress is not None:
            progress(step, total)
    return SanityResult(
        rows=tuple(rows),
        projections=torch.stack(projections),
        layer=name,
        seeds=tuple(s.describe() for s in fixed),
    )


def _fixed_selections(
    original: Projection, net: Deconvnet, x: Tensor, name: str
) -> list[Selection]:
    """The trained model's seeds, pinned: neurons at their channel/position, or a mask."""
    if original.positions is not None:
        chans, spots = original.channels[0], original.positions[0]
        if spots.shape[-1] == 0:
            return [Unit(int(c)) for c in chans]
        return [Neuron(int(c), *(int(p) for p in pos)) for c, pos in zip(chans, spots, strict=True)]
    if isinstance(original.selection, Threshold):
        y = net.layer_output(x, name)
        return [Mask(y >= original.selection.threshold)]
    return [original.selection]


def _randomise(module: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for param in module.parameters(recurse=False):
            spread = float(param.detach().float().std()) if param.numel() > 1 else 0.0
            spread = spread if math.isfinite(spread) and spread > 0 else 1.0
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            param.copy_((noise * spread).to(param.dtype))


def _boxes(model: nn.Module, x: Tensor, name: str, fixed: list[Selection]) -> list[Box | None]:
    """Each pinned neuron's receptive-field box: metrics are taken inside it.

    Outside the box every projection is exactly zero, so whole-image metrics would be
    dominated by those zeros and read ~1 whatever the weights.
    """
    field = receptive_fields(model, tuple(x.shape)).get(name)
    hw = (int(x.shape[2]), int(x.shape[3]))
    return [
        field.box(s.position[0], s.position[1], hw)
        if field is not None and isinstance(s, Neuron) and len(s.position) == 2
        else None
        for s in fixed
    ]


def _row(
    step: int,
    randomised: tuple[str, ...],
    reference: Tensor,
    images: Tensor,
    boxes: list[Box | None],
) -> SanityRow:
    ranks, structure, signed = [], [], []
    for k in range(images.shape[0]):
        before, after = reference[k], images[k]
        box = boxes[k] if k < len(boxes) else None
        if box is not None:
            before = before[:, box[0] : box[2], box[1] : box[3]]
            after = after[:, box[0] : box[2], box[1] : box[3]]
        a, b = saliency_map(before), saliency_map(after)
        ranks.append(spearman(a, b))
        structure.append(ssim(a, b))
        signed.append(spearman(before.sum(0), after.sum(0)))
    return SanityRow(
        step, randomised, float(np.mean(ranks)), float(np.mean(structure)), float(np.mean(signed))
    )


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(values.size, dtype=np.float64)
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    for start, end in zip(starts, ends, strict=True):
        if end - start > 1:
            ranks[order[start:end]] = (start + end - 1) / 2
    return ranks


def _flat_tensor(values: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def _flat(values: Tensor | np.ndarray) -> np.ndarray:
    return _flat_tensor(values).ravel()


def _image(values: Tensor | np.ndarray) -> np.ndarray:
    image = _flat_tensor(values)
    if image.ndim != 2:
        raise InputError(f"ssim needs (H, W) images, got shape {image.shape}")
    return image


def _gaussian(size: int) -> np.ndarray:
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    weights = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return cast(np.ndarray, weights / weights.sum())


def _filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation with ``kernel`` along both axes."""
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel[::-1], mode="valid"), 1, image)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel[::-1], mode="valid"), 0, rows)
