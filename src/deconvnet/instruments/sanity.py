"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps").

Cascading randomisation: re-initialise the weights from the top layer down, one layer more
at each step, and recompute the same projection (the seeds chosen on the trained model:
same channel and position). A method that explains the model should change as its weights
go; one that only reflects the image (edge detection) stays similar. Similarity is the
Spearman rank correlation and SSIM of the absolute-value maps (channels summed, divided by
their maximum, so in [0, 1]) against the trained model's projection.

Only the layers the projected layer depends on are randomised (:func:`split_layers`): a
layer above it, or a branch that does not feed it, cannot change the projection, and
would only add steps that read 1.00. A unit that no longer fires after a step has no
projection to compare; its row says ``"unit inactive"`` and carries no metric.

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
from torch.func import functional_call

from deconvnet.engine.capture import forward_until, output_tensor
from deconvnet.engine.engine import Deconvnet
from deconvnet.engine.hooks import holding_model_lock
from deconvnet.engine.layers import resolve_layer
from deconvnet.engine.projection import Projection
from deconvnet.engine.receptive import Box, receptive_fields
from deconvnet.engine.rules import ReversePolicy
from deconvnet.engine.selection import Mask, Neuron, Selection, Threshold, Unit
from deconvnet.errors import InputError

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_DATA_RANGE = 1.0
DEFAULT_SEED = 0
STATUS_OK = "ok"
STATUS_INACTIVE = "unit inactive"
"""A row's status when no seed fires: the seeded activation is <= 0 or projects to zero."""

Reinitialise = Callable[[nn.Module, torch.Generator], None]
"""Re-initialises one module's own parameters in place, drawing from the generator."""


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
class SeedScore:
    """One seed's similarity to its trained projection at one step.

    ``active``: the seed still fires after this step (its activation is positive and its
    projection not all zero). The metrics are None unless it fires both here and in the
    trained model, or where a map is constant (no ranks to correlate).
    """

    active: bool
    spearman: float | None
    ssim: float | None
    spearman_signed: float | None


@dataclass(frozen=True)
class SanityRow:
    """One cascading step: the layers randomised so far (top first) and the similarity.

    The metrics are means over the seeds compared (``scores``, one per seed); None when no
    seed fires both here and in the trained model, and ``status`` then says ``"unit
    inactive"``, so a dead unit never reads as a number. ``status`` is ``"ok"`` when every
    seed was compared. ``same_as_previous``: every seed's projection and activation are
    bit-identical to the step before (the layer randomised here reaches none of the seeded
    units, e.g. the other half of a concatenation).
    """

    step: int
    randomised: tuple[str, ...]
    spearman: float | None
    ssim: float | None
    spearman_signed: float | None
    status: str
    scores: tuple[SeedScore, ...]
    same_as_previous: bool


@dataclass(frozen=True, eq=False)
class SanityResult:
    """Rows (step 0 = trained model) and each step's projection (S+1, K, C, H, W).

    ``skipped`` are the parameterised modules left trained because the projected layer
    does not depend on them (above it, or a branch that does not feed it). ``boxes`` is,
    per seed, the input box its projection can reach (the metrics are taken inside it;
    figures zoom to it); None where the layer has no receptive field (fc layers).
    ``precisions``, per step and seed, is the number type its reverse pass ran in.
    """

    rows: tuple[SanityRow, ...]
    projections: Tensor
    layer: str
    seeds: tuple[str, ...]
    skipped: tuple[str, ...]
    boxes: tuple[Box | None, ...]
    precisions: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class LayerSplit:
    """The parameterised modules of a model, split by whether a layer depends on them.

    ``feeding`` in forward order (the order they ran); ``skipped`` in ``named_modules()``
    order.
    """

    feeding: tuple[str, ...]
    skipped: tuple[str, ...]


def reinitialise_gaussian(module: nn.Module, generator: torch.Generator) -> None:
    """New Gaussian weights with each tensor's own standard deviation (1 if it has none),
    so activation scales stay comparable with the trained model's."""
    with torch.no_grad():
        for param in module.parameters(recurse=False):
            spread = float(param.detach().float().std()) if param.numel() > 1 else 0.0
            spread = spread if math.isfinite(spread) and spread > 0 else 1.0
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            param.copy_((noise * spread).to(param.device, param.dtype))


@holding_model_lock  # its hooks would be seen by other threads using the model
def split_layers(model: nn.Module, x: Tensor, layer: str | nn.Module) -> LayerSplit:
    """Which modules holding parameters ``layer``'s output depends on, read from a forward pass.

    The forward pass runs on ``x[:1]`` until the layer's output exists, with every parameter
    swapped (``torch.func.functional_call``) for a view that requires grad; a module feeds
    the layer when the autograd graph of that output reaches one of its own parameters. So
    layers above the projected one (never run before it) and sibling branches (run, but
    not part of its graph) are both left out, whatever the module names or their order.
    The model itself is not changed: its parameters, buffers (BatchNorm statistics run on
    copies) and random state are left as they were.
    """
    name, target = resolve_layer(model, layer)
    owned = _owned_parameters(model)
    if not owned:
        raise InputError("the model has no parameters to randomise")
    leaves = {
        id(p): p.detach().requires_grad_(True)
        for _, params in owned
        for p in params
        if p.is_floating_point()
    }
    swapped: dict[str, Tensor] = {
        key: leaves[id(p)]
        for key, p in model.named_parameters(remove_duplicate=False)
        if id(p) in leaves
    }
    swapped.update(
        {key: b.detach().clone() for key, b in model.named_buffers(remove_duplicate=False)}
    )
    first_param = owned[0][1][0]
    x = x[:1].detach().to(first_param.device)
    cuda = [x.device] if x.device.type == "cuda" else []
    layers = {module_name: model.get_submodule(module_name) for module_name, _ in owned}
    layers[name] = target
    with torch.random.fork_rng(devices=cuda), torch.enable_grad():
        # every owned module's output in the order they finish, up to the layer's
        finished = forward_until(
            model,
            x,
            layers,
            keep=lambda _, output: output,
            until=name,
            run=lambda inputs: functional_call(model, swapped, (inputs,)),
        )
        output = output_tensor(name, finished[name])
        wanted = list(leaves.values())
        grads = (
            torch.autograd.grad(output, wanted, torch.ones_like(output), allow_unused=True)
            if output.requires_grad
            else [None] * len(wanted)
        )
    reached = {key for key, grad in zip(leaves, grads, strict=True) if grad is not None}
    feeding = [n for n, params in owned if any(id(p) in reached for p in params)]
    order = {module_name: index for index, module_name in enumerate(finished)}
    feeding.sort(key=lambda n: order.get(n, -1))
    return LayerSplit(
        feeding=tuple(feeding),
        skipped=tuple(n for n, _ in owned if n not in feeding),
    )


def cascading_randomisation(
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module,
    select: Selection,
    *,
    rule: str | None = None,
    lrn: str | None = None,
    collisions: str | None = None,
    activations: str | None = None,
    precision: str | None = None,
    seed: int = DEFAULT_SEED,
    reinitialise: Reinitialise = reinitialise_gaussian,
    progress: Callable[[int, int | None], None] | None = None,
) -> SanityResult:
    """Randomise the layers ``layer`` depends on, top-down, one more per step, re-projecting.

    The layers are those of :func:`split_layers`, the last to run first; ``reinitialise``
    gives each its new weights (default :func:`reinitialise_gaussian`, seeded by ``seed``).
    Metrics are averaged over the ``K`` seeds that still fire and taken inside each seed's
    receptive-field box (where the projection can be non-zero). ``rule``, ``lrn``,
    ``collisions``, ``activations`` and ``precision`` are the reverse pass (see
    :class:`~deconvnet.engine.engine.Deconvnet`).
    """
    policy = ReversePolicy.of(
        rule, lrn, collisions, activations=activations, precision=precision
    )
    name, _ = resolve_layer(model, layer)
    x = x[:1]
    with Deconvnet.of(model, policy) as net:
        original = net.project(x, name, select)
    fixed = _fixed_selections(original, net, x, name)
    boxes = _boxes(model, x, name, original)
    work = copy.deepcopy(model)
    split = split_layers(work, x, name)
    if not split.feeding:
        raise InputError(f"layer {name!r} depends on no parameters: nothing to randomise")
    order = tuple(reversed(split.feeding))
    generator = torch.Generator().manual_seed(seed)
    reference = original.images[0].cpu()
    before = original.values[0].cpu()
    reference_active = _active(before, reference)
    projections = [reference]
    precisions = [tuple(original.precision_at(0, k) for k in range(reference.shape[0]))]
    rows = [_first_row(reference_active)]
    for step, layer_name in enumerate(order, start=1):
        reinitialise(work.get_submodule(layer_name), generator)
        with Deconvnet.of(work, policy) as net:
            results = [net.project(x, name, s) for s in fixed]
        images = torch.stack([r.images[0, 0] for r in results]).cpu()
        values = torch.stack([r.values[0, 0] for r in results]).cpu()
        same = torch.equal(images, projections[-1]) and torch.equal(values, before)
        rows.append(
            _row(step, order[:step], reference, images, boxes, reference_active, values, same)
        )
        projections.append(images)
        precisions.append(tuple(r.precision_at(0, 0) for r in results))
        before = values
        if progress is not None:
            progress(step, len(order))
    return SanityResult(
        rows=tuple(rows),
        projections=torch.stack(projections),
        layer=name,
        seeds=tuple(s.describe() for s in fixed),
        skipped=split.skipped,
        boxes=tuple(boxes),
        precisions=tuple(precisions),
    )


def _owned_parameters(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """``(module name, its own parameters)`` for each module holding any, in module order."""
    owned = []
    for module_name, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        if params:
            owned.append((module_name, params))
    return owned


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


def _boxes(model: nn.Module, x: Tensor, name: str, original: Projection) -> list[Box | None]:
    """Each seed's receptive-field box: metrics are taken inside it.

    Outside the box every projection is exactly zero, so whole-image metrics would be
    dominated by those zeros and read ~1 whatever the weights.
    """
    count = int(original.images.shape[1])
    if original.extents is None:
        return [None] * count
    field = receptive_fields(model, tuple(x.shape)).get(name)
    if field is None:
        return [None] * count
    hw = (int(x.shape[2]), int(x.shape[3]))
    return [field.span(original.extents[0, k].tolist(), hw) for k in range(count)]


def _active(values: Tensor, images: Tensor) -> tuple[bool, ...]:
    """Per seed: the seeded activation is positive and its projection is not all zero."""
    return tuple(
        bool(values[k] > 0) and bool(torch.any(images[k] != 0)) for k in range(images.shape[0])
    )


def _first_row(active: tuple[bool, ...]) -> SanityRow:
    """Step 0 compares the trained projection with itself: 1 wherever the seed fires."""
    scores = tuple(
        SeedScore(a, 1.0, 1.0, 1.0) if a else SeedScore(False, None, None, None) for a in active
    )
    value = 1.0 if any(active) else None
    return SanityRow(0, (), value, value, value, _status(active), scores, False)


def _row(
    step: int,
    randomised: tuple[str, ...],
    reference: Tensor,
    images: Tensor,
    boxes: list[Box | None],
    reference_active: tuple[bool, ...],
    values: Tensor,
    same_as_previous: bool,
) -> SanityRow:
    active = _active(values, images)
    scores = []
    for k in range(images.shape[0]):
        if not (reference_active[k] and active[k]):
            scores.append(SeedScore(active[k], None, None, None))
            continue
        before, after = reference[k], images[k]
        box = boxes[k]
        if box is not None:
            before = before[:, box[0] : box[2], box[1] : box[3]]
            after = after[:, box[0] : box[2], box[1] : box[3]]
        a, b = saliency_map(before), saliency_map(after)
        scores.append(
            SeedScore(
                True,
                _defined(spearman(a, b)),
                _defined(ssim(a, b)),
                _defined(spearman(before.sum(0), after.sum(0))),
            )
        )
    compared = tuple(reference_active[k] and active[k] for k in range(len(scores)))
    return SanityRow(
        step,
        randomised,
        _mean([s.spearman for s in scores]),
        _mean([s.ssim for s in scores]),
        _mean([s.spearman_signed for s in scores]),
        _status(compared),
        tuple(scores),
        same_as_previous,
    )


def _status(compared: tuple[bool, ...]) -> str:
    missing = compared.count(False)
    if missing == 0:
        return STATUS_OK
    if missing == len(compared):
        return STATUS_INACTIVE
    return f"{missing} of {len(compared)} units inactive"


def _defined(value: float) -> float | None:
    """None for NaN (a constant map has no rank correlation)."""
    return value if math.isfinite(value) else None


def _mean(values: list[float | None]) -> float | None:
    """Mean of the defined values (None when there are none)."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


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
