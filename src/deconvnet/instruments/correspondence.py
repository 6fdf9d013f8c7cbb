"""Correspondence of object parts across images, the paper's §4.3 and Table 1.

For images of one kind of object (the paper: 5 frontal dog faces) and a part that each
image shows (left eye, right eye, nose), the part is masked with a grey square in every
image. At layer ``l`` the change of the feature vector is ``eps_i = x_i - x~_i`` (original
minus masked, the layer's whole output flattened), and the consistency of that change
over the images is

    Delta_l = sum over ordered pairs i != j of H(sign(eps_i), sign(eps_j)),

``H`` the Hamming distance (the number of entries whose signs differ; ``sign(0) = 0``, so
an entry the mask leaves unchanged in one image and not in the other counts as a
difference). Lower is more consistent: masking the part changes the representation in
the same direction in every image. The same score for squares of the same size at random
places (inside each image's ``object`` box when one is given, the paper's "random parts of
the object") is the control.

**Normalisation** (for the table, as the paper's Table 1 reports small fractions): each
``H`` is divided by the feature vector's length, giving the fraction of entries whose sign
change differs; :attr:`PartScore.mean` and :attr:`PartScore.std` are the mean and the
standard deviation (``ddof = 0``) of that fraction over the unordered pairs (for the random
control: over the pairs of every trial). :attr:`PartScore.delta` is the paper's sum itself
(for the control, its mean over trials).

**The mask**: a square of side ``size`` pixels of the network input, centred on the part
box's centre and moved inside the image where it would cross an edge, filled with the
model's mean pixel (zero after mean subtraction) or the given fill.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from deconvnet.engine.capture import flat_outputs
from deconvnet.engine.layers import resolve_layer
from deconvnet.engine.receptive import Box
from deconvnet.errors import InputError
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.instruments.work import DEFAULT_MAX_WORK, check_work
from deconvnet.models.card import require_any_batch

RANDOM = "random"
"""The control's name in :attr:`CorrespondenceResult.scores`."""
DEFAULT_TRIALS = 10
"""Random-square trials (each draws one square per image)."""
DEFAULT_SIZE_FRACTION = 1 / 8
"""Default mask side as a share of the input's shorter side (28 px at 224): about an eye
of a dog face that fills the frame. The paper gives no size in its text."""
PART_KEYS_RESERVED = ("object",)
PARTS_DIR = Path(__file__).resolve().parent / "parts"
"""Part boxes shipped with the package (see its README.md)."""
BUNDLED_PARTS: dict[str, str] = {"imagenet-dogs": "imagenet_dogs.json"}
"""Names of the bundled part files: ``imagenet-dogs`` marks the eyes and nose of five dogs
of the 200-photo ImageNet sample (the paper's Table 1 setting)."""


def bundled_parts(name: str) -> Path | None:
    """The file of a bundled part set, or ``None`` for a name that is not one."""
    file = BUNDLED_PARTS.get(name)
    return PARTS_DIR / file if file is not None else None
"""Box names in a parts mapping that are not parts (``object`` bounds the random control)."""

Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class PartScore:
    """The consistency of one part's (or the random control's) masking at one layer.

    ``delta`` is the paper's ``sum_{i != j} H`` (ordered pairs; the control's is the mean
    over trials); ``mean`` and ``std`` are over pairs of ``H / feature length``;
    ``fractions`` lists those per-pair values (pairs in ``itertools.combinations`` order,
    trial after trial for the control).
    """

    part: str
    layer: str
    delta: float
    mean: float
    std: float
    fractions: tuple[float, ...]


@dataclass(frozen=True, eq=False)
class CorrespondenceResult:
    """Scores per part and layer, and every mask that was applied.

    Attributes
    ----------
    parts : the parts, in the order of the first image's mapping, then :data:`RANDOM`.
    layers : ``named_modules()`` names.
    scores : ``(part, layer)`` -> :class:`PartScore`.
    masks : per image, part -> the ``(top, left, bottom, right)`` square masked.
    random_masks : per trial, per image, the random square masked.
    feature_sizes : layer -> length of its feature vector.
    size, fill, seed : the mask side, its fill (network space) and the control's seed.
    """

    parts: tuple[str, ...]
    layers: tuple[str, ...]
    scores: dict[tuple[str, str], PartScore]
    masks: tuple[dict[str, Box], ...]
    random_masks: tuple[tuple[Box, ...], ...]
    feature_sizes: dict[str, int]
    size: int
    fill: tuple[float, ...]
    seed: int


def default_size(height: int, width: int) -> int:
    """:data:`DEFAULT_SIZE_FRACTION` of the shorter side, at least one pixel."""
    return max(1, round(min(height, width) * DEFAULT_SIZE_FRACTION))


def mask_box(part: Box, size: int, height: int, width: int) -> Box:
    """The ``size`` square centred on ``part``'s centre, moved inside ``height x width``."""
    if size > min(height, width):
        raise InputError(f"mask size {size} is larger than the {height}x{width} input")
    top, left, bottom, right = part
    cy, cx = (top + bottom) / 2, (left + right) / 2
    y = min(max(round(cy - size / 2), 0), height - size)
    x = min(max(round(cx - size / 2), 0), width - size)
    return (y, x, y + size, x + size)


def box_in_input(box: Box, photo_hw: tuple[int, int], spec: Preprocessing) -> Box:
    """A ``(top, left, bottom, right)`` box in photo pixels, in the network input's pixels
    after ``spec``'s resize (and centre crop), rounded; it may reach past the input."""
    height, width = photo_hw
    if spec.resize_rule == "none":
        return box
    if spec.resize_rule == "exact":
        new_h, new_w = spec.input_size
        oy = ox = 0
    else:  # torchvision's Resize(int) then CenterCrop, as deconvnet.inputs.images does them
        assert spec.resize_to is not None  # checked by Preprocessing
        shorter = spec.resize_to
        if height <= width:
            new_h, new_w = shorter, int(shorter * width / height)
        else:
            new_h, new_w = int(shorter * height / width), shorter
        oy = round((new_h - spec.input_size[0]) / 2.0)
        ox = round((new_w - spec.input_size[1]) / 2.0)
    sy, sx = new_h / height, new_w / width
    top, left, bottom, right = box
    return (
        round(top * sy - oy),
        round(left * sx - ox),
        round(bottom * sy - oy),
        round(right * sx - ox),
    )


def hamming(a: Tensor, b: Tensor) -> int:
    """Entries whose signs differ between ``a`` and ``b`` (sign of 0 is 0)."""
    return int((torch.sign(a) != torch.sign(b)).sum())


def correspondence(
    model: nn.Module,
    images: Sequence[Tensor],
    parts: Sequence[Mapping[str, Box]],
    layers: Sequence[str | nn.Module],
    *,
    size: int | None = None,
    fill: float | Sequence[float] = 0.0,
    trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    progress: Progress | None = None,
    max_work: int | None = DEFAULT_MAX_WORK,
) -> CorrespondenceResult:
    """Mask each part in every image and score how consistently the features change.

    Parameters
    ----------
    model : used as given (call ``.eval()`` yourself); never modified.
    images : preprocessed inputs, each (1, C, H, W), all the same size; at least two.
    parts : per image, part name -> box ``(top, left, bottom, right)`` in input pixels;
        every image names the same parts. An ``object`` box (optional, per image) bounds
        the random control's squares.
    layers : dotted names or modules; each output is flattened into a feature vector.
    size : mask side in input pixels (default :func:`default_size`).
    fill : the mask's value in the network's input space (default 0: the mean pixel of a
        mean-subtracted input).
    trials, seed : the random control: ``trials`` draws of one square per image from a
        ``torch.Generator`` seeded with ``seed`` (reproducible).
    progress : ``(masked images evaluated, total)``.
    max_work : most images this call may evaluate, ``images x (1 + parts + trials)``
        (:func:`~deconvnet.instruments.work.check_work`); ``None`` for no ceiling.

    Raises
    ------
    InputError, LayerNotFoundError
    """
    xs = _check_images(images)
    if len(parts) != len(xs):
        raise InputError(f"{len(parts)} part mappings for {len(xs)} images")
    names = [name for name in parts[0] if name not in PART_KEYS_RESERVED]
    for index, mapping in enumerate(parts):
        own = [name for name in mapping if name not in PART_KEYS_RESERVED]
        if sorted(own) != sorted(names):
            raise InputError(f"image {index} names parts {sorted(own)}, image 0 {sorted(names)}")
    if not names:
        raise InputError("no parts to mask: give at least one part box per image")
    if trials < 1:
        raise InputError(f"trials must be >= 1, got {trials}")
    total = len(xs) * (1 + len(names) + trials)
    check_work(total, max_work, what="correspondence", unit="masked images")
    require_any_batch(model, "correspondence")
    named = [resolve_layer(model, layer) for layer in layers]
    if not named or len({name for name, _ in named}) != len(named):
        raise InputError(f"layers must name distinct layers, got {[n for n, _ in named]}")
    height, width = xs.shape[-2:]
    side = default_size(height, width) if size is None else size
    if side < 1:
        raise InputError(f"mask size must be >= 1, got {side}")
    fill_values = torch.as_tensor(fill, dtype=xs.dtype).flatten()
    if fill_values.numel() not in (1, xs.shape[1]):
        raise InputError(f"fill has {fill_values.numel()} values; images have {xs.shape[1]}")
    masks = tuple({p: mask_box(m[p], side, height, width) for p in names} for m in parts)
    generator = torch.Generator().manual_seed(seed)
    random_masks = tuple(
        tuple(_random_box(m.get("object"), side, height, width, generator) for m in parts)
        for _ in range(trials)
    )
    counter = _Counter(progress, total)
    originals = _features(model, xs, named)
    counter.add(len(xs))
    scores: dict[tuple[str, str], PartScore] = {}
    for part in names:
        changes = _changes(model, xs, [m[part] for m in masks], fill_values, named, originals)
        counter.add(len(xs))
        for layer, eps in changes.items():
            scores[(part, layer)] = _score(part, layer, [eps])
    random_changes: dict[str, list[Tensor]] = {name: [] for name, _ in named}
    for trial in random_masks:
        changes = _changes(model, xs, list(trial), fill_values, named, originals)
        counter.add(len(xs))
        for layer, eps in changes.items():
            random_changes[layer].append(eps)
    for layer, trial_changes in random_changes.items():
        scores[(RANDOM, layer)] = _score(RANDOM, layer, trial_changes)
    return CorrespondenceResult(
        parts=(*names, RANDOM),
        layers=tuple(name for name, _ in named),
        scores=scores,
        masks=masks,
        random_masks=random_masks,
        feature_sizes={name: int(f.shape[1]) for name, f in originals.items()},
        size=side,
        fill=tuple(float(v) for v in fill_values),
        seed=seed,
    )


def masked(x: Tensor, box: Box, fill: Tensor | float) -> Tensor:
    """A copy of ``x`` (B, C, H, W) with ``box`` set to ``fill`` (one or one per channel)."""
    values = torch.as_tensor(fill, dtype=x.dtype, device=x.device).flatten()
    out = x.clone()
    top, left, bottom, right = box
    out[:, :, top:bottom, left:right] = values.expand(x.shape[1]).view(1, -1, 1, 1)
    return out


class _Counter:
    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0
        if progress is not None:
            progress(0, total)

    def add(self, count: int) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(self.done, self.total)


def _score(part: str, layer: str, trial_changes: Sequence[Tensor]) -> PartScore:
    """Hamming distances of the sign changes over the image pairs of each trial."""
    fractions: list[float] = []
    deltas: list[int] = []
    for eps in trial_changes:
        length = eps.shape[1]
        pair_counts = [
            hamming(eps[i], eps[j]) for i, j in itertools.combinations(range(len(eps)), 2)
        ]
        deltas.append(2 * sum(pair_counts))  # ordered pairs: each unordered pair twice
        fractions.extend(count / length for count in pair_counts)
    values = torch.tensor(fractions, dtype=torch.float64)
    return PartScore(
        part=part,
        layer=layer,
        delta=float(sum(deltas)) / len(deltas),
        mean=float(values.mean()),
        std=float(values.std(correction=0)),
        fractions=tuple(fractions),
    )


def _changes(
    model: nn.Module,
    xs: Tensor,
    boxes: Sequence[Box],
    fill: Tensor,
    named: Sequence[tuple[str, nn.Module]],
    originals: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """``eps`` (N, D) per layer: original minus masked features, image ``n`` masked at
    ``boxes[n]``."""
    batch = torch.cat([masked(xs[n : n + 1], box, fill) for n, box in enumerate(boxes)])
    features = _features(model, batch, named)
    return {name: originals[name] - features[name] for name in originals}


def _features(
    model: nn.Module, batch: Tensor, named: Sequence[tuple[str, nn.Module]]
) -> dict[str, Tensor]:
    """Each layer's output for ``batch``, flattened (B, D), on the CPU."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else batch.device
    captured, _ = flat_outputs(model, batch.to(device), named)
    return {name: flat.cpu() for name, flat in captured.items()}


def _random_box(
    bounds: Box | None, size: int, height: int, width: int, generator: torch.Generator
) -> Box:
    """A ``size`` square at a uniformly random place inside ``bounds`` (or the image)."""
    top, left, bottom, right = bounds if bounds is not None else (0, 0, height, width)
    top, left = max(0, top), max(0, left)
    bottom, right = min(height, bottom), min(width, right)
    if bottom - top < size or right - left < size:  # too small: centre one square on it
        return mask_box((top, left, bottom, right), size, height, width)
    y = int(torch.randint(top, bottom - size + 1, (1,), generator=generator))
    x = int(torch.randint(left, right - size + 1, (1,), generator=generator))
    return (y, x, y + size, x + size)


def _check_images(images: Sequence[Tensor]) -> Tensor:
    if len(images) < 2:
        raise InputError(
            f"correspondence compares images pairwise: give at least 2, got {len(images)}"
        )
    shapes = set()
    for image in images:
        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[0] != 1:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise InputError(f"each image must be one preprocessed input (1, C, H, W), got {shape}")
        shapes.add(tuple(image.shape))
    if len(shapes) != 1:
        raise InputError(f"images must share one size to compare features, got {sorted(shapes)}")
    return torch.cat([image.detach().float().cpu() for image in images])
