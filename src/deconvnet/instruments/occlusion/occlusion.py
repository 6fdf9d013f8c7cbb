"""Occlusion sensitivity, the paper's Fig. 7 (Zeiler & Fergus 2014, §4.2).

A grey square slides over the image; at each position the network runs on the occluded
image and we record (b) the total activation of the strongest feature map of a layer (the
map strongest in the unoccluded image), (d) the probability of the true (or top) class, and
(e) the most probable class. Panel (c) is that map's deconv projection in the unoccluded
image. All positions run in batches; when the network's early layers are local (a conv /
pool chain) only the part of an early layer that the occluder can change is recomputed
and spliced into the cached unoccluded maps (see
:mod:`~deconvnet.instruments.occlusion.splice`), which gives the same numbers as the plain
forward pass (checked on every run) at a fraction of the cost.

>>> res = occlude(model, x, "features.10", Occluder(size=48, stride=8))   # doctest: +SKIP
>>> res.probability.shape        # one value per occluder position (rows, columns)

The figure lives in :mod:`deconvnet.figures.occlusion`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from deconvnet.engine import guard
from deconvnet.engine.capture import forward_through, output_tensor
from deconvnet.engine.engine import Deconvnet
from deconvnet.engine.hooks import holding_model_lock
from deconvnet.engine.layers import resolve_layer
from deconvnet.engine.rules import DEFAULT_ACTIVATIONS, DEFAULT_RULE, ReversePolicy
from deconvnet.engine.selection import MapMax
from deconvnet.errors import InputError
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.instruments.occlusion import splice
from deconvnet.instruments.occlusion.splice import Evaluator
from deconvnet.instruments.work import DEFAULT_MAX_WORK, check_work
from deconvnet.models.card import batch_size_for, model_device

DEFAULT_SIZE = 48
"""Occluder side in pixels for a 224-pixel input (the paper's grey squares are similar)."""
DEFAULT_STRIDE = 8
"""Occluder step in pixels for a 224-pixel input."""
REFERENCE_SIDE = 224
"""Input side the defaults are for; :meth:`Occluder.for_input` scales them to others."""
DEFAULT_BATCH_SIZE = 32
"""Occluded images (or crops) evaluated together."""
PROBABILITY_SUM_TOLERANCE = 1e-3
"""Outputs that are >= 0 and sum to 1 within this are taken as probabilities already."""
MID_GREY = 0.5

Method = Literal["auto", "spliced", "naive"]
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Occluder:
    """A square occluder: side ``size``, step ``stride``, evaluated ``batch_size`` at a time.

    ``fill`` is the occluder's value in the network's input space (after normalisation),
    one number or one per channel; None (default) means the model's mean pixel
    (:func:`mean_fill`).
    """

    size: int = DEFAULT_SIZE
    stride: int = DEFAULT_STRIDE
    fill: float | tuple[float, ...] | None = None
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        for name in ("size", "stride", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"occluder {name} must be an integer >= 1, got {value!r}")
        if self.fill is not None:
            values = self.fill if isinstance(self.fill, tuple) else (self.fill,)
            if not values or not all(math.isfinite(float(v)) for v in values):
                raise InputError(f"occluder fill must be finite numbers, got {self.fill!r}")

    @classmethod
    def for_input(cls, height: int, width: int, **options: Any) -> Occluder:
        """Defaults scaled to an ``height x width`` input (e.g. 7 px, step 1 at 32x32)."""
        factor = min(height, width) / REFERENCE_SIDE
        options.setdefault("size", max(1, round(DEFAULT_SIZE * factor)))
        options.setdefault("stride", max(1, round(DEFAULT_STRIDE * factor)))
        return cls(**options)

    def grid(self, height: int, width: int) -> tuple[list[int], list[int]]:
        """Top and left coordinates of every occluder position (it stays inside the image)."""
        if self.size > min(height, width):
            raise InputError(
                f"occluder size {self.size} is larger than the {height}x{width} input; "
                f"use a size <= {min(height, width)}"
            )
        return (
            list(range(0, height - self.size + 1, self.stride)),
            list(range(0, width - self.size + 1, self.stride)),
        )


def mean_fill(spec: Preprocessing) -> tuple[float, float, float]:
    """The model's mean pixel in its input space: zero when the spec subtracts a mean.

    A spec without a mean (all zero) says nothing about the data, so mid-grey is used.
    """
    if any(spec.mean):
        return (0.0, 0.0, 0.0)
    return grey_fill(spec, MID_GREY)


def grey_fill(spec: Preprocessing, grey: float) -> tuple[float, float, float]:
    """A grey level in [0, 1] expressed in the network's input space (per channel)."""
    value = grey * spec.scale
    return tuple((value - m) / s for m, s in zip(spec.mean, spec.std, strict=True))  # type: ignore[return-value]


def fill_pixels(fill: Sequence[float], spec: Preprocessing) -> tuple[float, ...]:
    """An occluder fill given in the network's input space, back in 8-bit pixel units in
    RGB order (one value for a grey-input net): what the occluder looks like."""
    values = [f * s + m for f, s, m in zip(fill, spec.std, spec.mean, strict=True)]
    pixels = [v / spec.scale * 255.0 for v in values]
    if spec.channel_order == "BGR":
        pixels.reverse()
    return tuple(pixels)


@dataclass(frozen=True, eq=False)
class OcclusionResult:
    """The four panels of Fig. 7 as arrays, one entry per occluder position.

    Attributes
    ----------
    rows, cols : LongTensor — top / left pixel of each occluder position.
    activation : Tensor (rows, cols) — total activation (sum) of map ``channel`` of ``layer``.
    probability : Tensor (rows, cols) — probability of class ``target``.
    top_class : LongTensor (rows, cols) — most probable class.
    projection : Tensor (C, H, W) — deconv projection of map ``channel`` (its strongest
        activation) in the unoccluded image; ``precision`` the number type its reverse
        pass ran in (full precision: one reverse pass beside the positions' forwards).
    baseline_* : the same quantities for the unoccluded image.
    method : ``"spliced"`` or ``"naive"``; ``splice_layer`` where the splice happened.
    activations : the activation policy of the projection (``"strict"``, ``"relu-like"``).
    """

    layer: str
    channel: int
    target: int
    target_is_label: bool
    rows: Tensor
    cols: Tensor
    activation: Tensor
    probability: Tensor
    top_class: Tensor
    top_probability: Tensor
    projection: Tensor
    baseline_activation: float
    baseline_probability: float
    baseline_class: int
    occluder: Occluder
    fill: tuple[float, ...]
    method: str
    splice_layer: str | None
    activations: str = DEFAULT_ACTIVATIONS
    precision: str = "float32"


@holding_model_lock  # its hooks would be seen by other threads using the model
def occlude(
    model: nn.Module,
    x: Tensor,
    layer: str | nn.Module,
    occluder: Occluder | None = None,
    *,
    label: int | None = None,
    method: Method = "auto",
    activations: str | None = None,
    progress: Progress | None = None,
    max_work: int | None = DEFAULT_MAX_WORK,
) -> OcclusionResult:
    """Slide ``occluder`` over ``x`` (1, C, H, W) and record Fig. 7's four panels.

    Parameters
    ----------
    model : the classifier, in eval mode (train-mode BatchNorm/Dropout is refused), left
        exactly as it was; its output is logits or probabilities (detected: non-negative
        rows summing to 1), flattened per image.
    layer : the layer of panels (b) and (c): a dotted name, an alias (the model's card) or
        a module, called once per forward pass.
    occluder : default :meth:`Occluder.for_input` of the input size; ``fill`` None is 0
        (the mean pixel of a mean-subtracted input; use :func:`mean_fill` for others).
    label : the true class; None maps the top predicted class of the unoccluded image.
    method : ``"auto"`` splices when it is cheaper and verified equal, else runs plainly;
        ``"naive"`` always runs the full network on each occluded image.
    activations : the policy of panel (c)'s deconvnet projection (``"strict"`` by default;
        ``"relu-like"`` for SiLU, GELU, gates, LayerNorm), run before the occluder slides.
    progress : ``(positions_done, total)`` callback.
    max_work : most occluder positions this call may evaluate
        (:func:`~deconvnet.instruments.work.check_work`); ``None`` for no ceiling.

    Raises
    ------
    InputError, LayerNotFoundError
    """
    if method not in ("auto", "spliced", "naive"):
        raise InputError(f"method must be 'auto', 'spliced' or 'naive', got {method!r}")
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] != 1 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"occlusion needs one float image (1, C, H, W), got {shape}")
    x = x.detach().to(model_device(model, x.device)).clone()
    name, module = resolve_layer(model, layer)
    policy = ReversePolicy.of(DEFAULT_RULE, activations=activations)
    guard.require_eval(model)
    with guard.preserved(model):
        guard.require_single_call(model, x, module, name)
        return _occlude(model, x, name, module, occluder, label, method, policy, progress, max_work)


def _occlude(
    model: nn.Module,
    x: Tensor,
    name: str,
    module: nn.Module,
    occluder: Occluder | None,
    label: int | None,
    method: Method,
    policy: ReversePolicy,
    progress: Progress | None,
    max_work: int | None,
) -> OcclusionResult:
    occluder = occluder or Occluder.for_input(*x.shape[-2:])
    rows, cols = occluder.grid(*x.shape[-2:])
    check_work(len(rows) * len(cols), max_work, what="occlusion", unit="occluder positions")
    if progress is not None:
        progress(0, len(rows) * len(cols))
    fill = _fill_tensor(occluder, x)

    with torch.no_grad():
        maps, logits = _forward(model, x, name, module, None)
    if maps.dim() != 4:
        raise InputError(f"layer {name!r} has no feature maps (output {tuple(maps.shape)})")
    as_probs = _probabilities_from(logits)
    probs = as_probs(logits)[0]
    channel = int(maps[0].flatten(1).max(dim=1).values.argmax())
    if label is not None and not 0 <= label < probs.numel():
        raise InputError(f"label {label} out of range: the model has {probs.numel()} classes")
    target = int(probs.argmax()) if label is None else int(label)
    with torch.no_grad(), Deconvnet.of(model, policy) as net:
        projected = net.project(x, name, MapMax(channel))  # refusals before the work

    spots = [(top, left) for top in rows for left in cols]

    def measure(batch: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return _forward(model, batch, name, module, channel)

    evaluate = _plain_evaluator(x, occluder.size, fill, measure)
    splice_plan = None
    if method != "naive" and len(spots) > 1:
        plans = splice.plan(model, x, name, occluder.size, rows, cols)
        splice_plan, evaluate = splice.fastest(
            plans, x, spots, occluder.size, fill, measure, evaluate
        )
        if splice_plan is None and method == "spliced":
            raise InputError(f"the model cannot be spliced for occlusion at layer {name!r}")

    batch_size = batch_size_for(model, occluder.batch_size, "occlusion")
    batches = splice.batches(splice_plan, spots, batch_size)
    totals, outputs = _run_all(evaluate, spots, batches, progress)
    probabilities = as_probs(outputs)
    shape = (len(rows), len(cols))
    top_probability, top_class = probabilities.max(dim=1)
    return OcclusionResult(
        layer=name,
        channel=channel,
        target=target,
        target_is_label=label is not None,
        rows=torch.tensor(rows),
        cols=torch.tensor(cols),
        activation=totals.reshape(shape).cpu(),
        probability=probabilities[:, target].reshape(shape).cpu(),
        top_class=top_class.reshape(shape).cpu(),
        top_probability=top_probability.reshape(shape).cpu(),
        projection=projected.images[0, 0].cpu(),
        baseline_activation=float(maps[0, channel].sum()),
        baseline_probability=float(probs[target]),
        baseline_class=int(probs.argmax()),
        occluder=occluder,
        fill=tuple(float(v) for v in fill.flatten()),
        method="spliced" if splice_plan is not None else "naive",
        splice_layer=splice_plan.layer if splice_plan is not None else None,
        activations=policy.activations,
        precision=projected.precision_at(0, 0),
    )


def _fill_tensor(occluder: Occluder, x: Tensor) -> Tensor:
    fill = occluder.fill if occluder.fill is not None else 0.0
    values = torch.as_tensor(fill, dtype=x.dtype, device=x.device).flatten()
    if values.numel() not in (1, x.shape[1]):
        raise InputError(
            f"occluder fill has {values.numel()} values; the input has {x.shape[1]} channels"
        )
    return values.expand(x.shape[1]).reshape(-1, 1, 1).clone()


def _forward(
    model: nn.Module, x: Tensor, name: str, module: nn.Module, channel: int | None
) -> tuple[Tensor, Tensor]:
    """Model output and, at ``module``: the full output (channel None) or map sums."""

    def kept(layer: str, output: Any) -> Tensor:
        out = output_tensor(layer, output)
        if channel is None:
            return out.detach().clone()
        return out[:, channel].flatten(1).sum(dim=1).detach()

    captured, output = forward_through(model, x, {name: module}, keep=kept)
    return captured[name], output_tensor("the model", output).detach().flatten(1)


def _probabilities_from(logits: Tensor) -> Callable[[Tensor], Tensor]:
    sums = logits.sum(dim=1)
    already = bool((logits >= 0).all()) and bool(
        ((sums - 1).abs() < PROBABILITY_SUM_TOLERANCE).all()
    )
    if already:
        return lambda out: out
    return lambda out: torch.softmax(out, dim=1)


def _plain_evaluator(x: Tensor, size: int, fill: Tensor, measure: splice.Measure) -> Evaluator:
    """Evaluate positions by running the whole network on each occluded image."""

    def evaluate(spots: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        batch = x.expand(len(spots), -1, -1, -1).clone()
        for index, (top, left) in enumerate(spots):
            batch[index, :, top : top + size, left : left + size] = fill
        return measure(batch)

    return evaluate


def _run_all(
    evaluate: Evaluator,
    spots: list[tuple[int, int]],
    batches: Iterable[list[tuple[int, int]]],
    progress: Progress | None,
) -> tuple[Tensor, Tensor]:
    index = {spot: i for i, spot in enumerate(spots)}
    totals: Tensor | None = None
    outputs: Tensor | None = None
    done = 0
    for chunk in batches:
        sums, out = evaluate(chunk)
        if totals is None or outputs is None:
            totals = sums.new_zeros(len(spots))
            outputs = out.new_zeros((len(spots), out.shape[1]))
        where = torch.tensor([index[s] for s in chunk], device=sums.device)
        totals[where] = sums
        outputs[where] = out
        done += len(chunk)
        if progress is not None:
            progress(done, len(spots))
    assert totals is not None and outputs is not None  # spots is never empty
    return totals, outputs
