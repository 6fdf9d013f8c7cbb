"""The unit's own ideal image: feature visualisation by optimisation (Olah et al. 2017,
"Feature Visualization", Distill).

An image is optimised so that one map of a layer responds strongly: the activation of the
map's centre unit (``objective="neuron"``, the default) or the mean of the whole map
(``"channel"``). As in that article:

* **parameterisation**: the image is the inverse real FFT of a spectrum whose entries are
  scaled by ``1 / frequency ** decay_power`` (so every frequency band starts with equal
  energy and the optimiser is not drawn to high-frequency noise), in a colour space
  decorrelated with ImageNet's colour correlation (:data:`COLOUR_CORRELATION_SQRT`), then
  squashed into [0, 1] by a sigmoid; the model's own preprocessing
  (:func:`~deconvnet.inputs.images.normalise`) turns it into its input;
* **robustness**: at every step the image is jittered, scaled and rotated at random (one
  affine resampling, the uncovered canvas mid-grey), so the optimum does not rest on
  single pixels. The jitter is lucid's for a 224-pixel view, scaled to what the unit sees
  (its receptive field, or the image when the field covers it): a shift of a third of a
  small unit's field (6 pixels for SqueezeNet's 19-pixel ``fire2``) leaves an optimum
  that is robust but weaker than the dataset's best patch (measured: 4 of 8 ``fire2``
  units beat their top-1 with 6 pixels, 8 of 8 with 1);
* **optimiser**: Adam, a few hundred steps;
* **redirected ReLU gradient** (lucid's ``redirected_relu_grad``, on by default): a unit
  behind a ReLU that is dead on the grey starting image has no gradient at all, and the
  optimiser would never move. While optimising, every ReLU passes its own gradient for an
  image where any of it gets through; where none does, it passes the incoming gradient
  except where that would push a negative input lower. Once the unit fires the true
  gradient takes over; the final activation is measured with plain ReLUs.

Every random draw comes from a generator seeded by ``(seed, layer, map)``, so a unit's
image does not depend on which other units share its batch and is the same on every CPU
run. The model is never changed: only the image's spectrum has a gradient (computed with
``torch.autograd.grad`` for it alone, so no parameter's ``.grad`` is touched), and the
model is checked before and after (:func:`~deconvnet.engine.guard.preserved`).

The final activation is measured on the image rounded to 8 bits, the picture that is
saved, so a cached picture gives its recorded number again. It is compared with the
unit's strongest activation over a dataset (the top-1 of a scan): an optimised image that
does not beat it is flagged (:attr:`DreamResult.beats_dataset`).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from deconvnet.engine import guard
from deconvnet.engine.capture import forward_until, output_tensor
from deconvnet.engine.hooks import holding_model_lock
from deconvnet.engine.layers import resolve_layer
from deconvnet.engine.ops import OPS
from deconvnet.engine.ops.arguments import in_place
from deconvnet.engine.ops.op import CallMode, TorchCall
from deconvnet.engine.ops.rectifiers import ReLU
from deconvnet.engine.receptive import Box, ReceptiveField, receptive_fields
from deconvnet.engine.rules import ReverseRule, apply_rule
from deconvnet.errors import InputError, SelectionError
from deconvnet.inputs.documents import Count
from deconvnet.inputs.images import normalise
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.instruments.cache import ResultCache, UnitRecord, unit_header, unit_key
from deconvnet.instruments.work import DEFAULT_MAX_WORK, check_work
from deconvnet.models.card import batch_size_for, card_of

Objective = Literal["neuron", "channel"]
Progress = Callable[[int, int | None], None]

OBJECTIVES: dict[str, str] = {
    "neuron": "the activation of the map's centre unit",
    "channel": "the mean activation of the whole map",
}
COLOUR_CORRELATION_SQRT = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)
"""Square root of ImageNet's RGB colour correlation (rows R, G, B), as Olah et al.'s lucid
uses it: the optimiser works in decorrelated colours, this matrix mixes them back."""
DEFAULT_STEPS = 256
DEFAULT_LEARNING_RATE = 0.05
DEFAULT_BATCH_SIZE = 4
"""Units optimised together (each with its own image, generator and Adam state)."""
SPECTRUM_SD = 0.01
"""Standard deviation of the initial spectrum: the image starts as faint noise on grey."""
IMAGE_SCALE = 0.25
"""lucid's factor on the inverse FFT (its ``/ 4``)."""
JITTER_AT_224 = 6.0
"""Largest random shift in pixels per step for a unit that sees 224 pixels (lucid's jitters
of 8 and 4 pixels, each about its centre); scaled to the unit's receptive field (the
image when it covers the field), at least 1."""
SCALES = tuple(1 + (i - 5) / 50 for i in range(11))
"""Random scale factors (0.9 … 1.1), as lucid's standard transforms."""
ROTATIONS = (*range(-10, 11), 0, 0, 0, 0, 0)
"""Random rotations in degrees (no rotation weighted up), as lucid's standard transforms."""
GREY = 0.5
MAX_STEPS = 100_000
CACHE_KIND = "dream"
CACHE_FORMAT = "deconvnet.dream/3"


@dataclass(frozen=True)
class DreamSettings:
    """How an image is optimised; with the model's digest and the unit, the cache key.

    ``size``: the image's ``(H, W)`` (None: the model's input size); ``jitter`` in pixels
    (None: :data:`JITTER_AT_224` scaled to the unit's receptive field).
    """

    objective: Objective = "neuron"
    steps: int = DEFAULT_STEPS
    learning_rate: float = DEFAULT_LEARNING_RATE
    seed: int = 0
    decay_power: float = 1.0
    size: tuple[int, int] | None = None
    jitter: int | None = None
    redirect_relu: bool = True

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise InputError(
                f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}"
            )
        for name, low, high in (("steps", 1, MAX_STEPS), ("seed", 0, 1 << 62)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InputError(f"{name} must be an integer in {low}..{high}, got {value!r}")
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate <= 10):
            raise InputError(f"learning_rate must be in (0, 10], got {self.learning_rate!r}")
        if not (math.isfinite(self.decay_power) and 0 <= self.decay_power <= 4):
            raise InputError(f"decay_power must be in [0, 4], got {self.decay_power!r}")
        if self.size is not None and (
            len(self.size) != 2 or not all(8 <= s <= 4096 for s in self.size)
        ):
            raise InputError(f"size must be (H, W) with sides in 8..4096, got {self.size!r}")
        if self.jitter is not None and not 0 <= self.jitter <= 1024:
            raise InputError(f"jitter must be in 0..1024 pixels, got {self.jitter!r}")

    def record(self) -> dict[str, Any]:
        """The fields as plain JSON values (for manifests and the cache key)."""
        values = asdict(self)
        values["size"] = list(self.size) if self.size is not None else None
        return values


@dataclass(frozen=True, eq=False)
class DreamResult:
    """One unit's optimised image and what it does to the unit.

    Attributes
    ----------
    image : (H, W, 3) uint8 RGB, the optimised image (what the network saw, before its
        preprocessing).
    activation : the objective on ``image``: the centre unit (``neuron``) or the map's mean
        (``channel``).
    centre, mean, peak : the centre unit, the map's mean and its largest unit on ``image``.
    position : the centre unit ``(y, x)``; ``box`` its receptive field in the image (None
        when the layer has none).
    jitter : the largest shift used, in pixels.
    trajectory : the objective at every step (on that step's jittered image).
    dataset_top1 : the unit's strongest activation over a dataset, when given.
    seconds : optimisation time per unit (its batch's time divided among its units; for a
        cached result, the time it took when it was made).
    cached : read from the cache.
    """

    layer: str
    map: int
    settings: DreamSettings
    image: np.ndarray
    activation: float
    centre: float
    mean: float
    peak: float
    position: tuple[int, int]
    box: Box | None
    jitter: int
    trajectory: tuple[float, ...]
    dataset_top1: float | None
    seconds: float
    cached: bool
    key: str

    @property
    def compared(self) -> float:
        """What is compared with the dataset's top-1 (its largest unit over positions): the
        centre unit for ``neuron``, the map's largest unit for ``channel``."""
        return self.centre if self.settings.objective == "neuron" else self.peak

    @property
    def beats_dataset(self) -> bool | None:
        """Above the dataset's top-1 (None when none was given)."""
        return None if self.dataset_top1 is None else self.compared > self.dataset_top1


class DreamRecord(UnitRecord):
    """A cached result (``dream/KEY.json``), checked on reading."""

    activation: float
    centre: float
    mean: float
    peak: float
    position: tuple[Count, Count]
    box: tuple[int, int, int, int] | None
    jitter: Count
    trajectory: Annotated[list[float], Field(max_length=MAX_STEPS)]
    image_shape: tuple[Count, Count, Count]
    seconds: Annotated[float, Field(ge=0)]


@holding_model_lock  # forward hooks would be seen by other threads using the model
def dream(
    model: nn.Module,
    layer: str | nn.Module,
    maps: Sequence[int],
    *,
    settings: DreamSettings | None = None,
    preprocessing: Preprocessing | None = None,
    dataset_top1: Mapping[int, float] | None = None,
    cache: ResultCache | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    max_work: int | None = DEFAULT_MAX_WORK,
) -> list[DreamResult]:
    """Optimise one image per map of ``maps`` at ``layer``; results in the order of ``maps``.

    Parameters
    ----------
    model : in eval mode (train-mode BatchNorm/Dropout is refused), left exactly as it was;
        the images are made on its parameters' device (``cuda`` works unchanged).
    preprocessing : how an RGB image in [0, 1] becomes the model's input; default the model
        card's.
    dataset_top1 : map -> the unit's strongest activation over a dataset (a scan's top-1),
        for :attr:`DreamResult.beats_dataset`.
    cache : where results are kept by (model digest, layer, map, settings, preprocessing);
        a cached unit costs nothing.
    progress : ``(steps done, total)`` over the units not in the cache.
    max_work : most optimisation steps (one forward and backward pass of one image each)
        this call may run.

    Raises
    ------
    InputError
        Bad settings, a map outside the layer, a layer without feature maps, or too much
        work.
    """
    settings = settings or DreamSettings()
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    name, module = resolve_layer(model, layer)
    guard.require_eval(model)
    batch_size = batch_size_for(model, batch_size, "dream")
    spec = preprocessing or card_of(model).preprocessing
    if spec is None:
        raise InputError("the model has no preprocessing; pass preprocessing=")
    size = settings.size or spec.input_size
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    top1 = dict(dataset_top1 or {})
    with guard.preserved(model):
        probe = torch.full((1, spec.channels, *size), 0.0, device=device, dtype=dtype)
        guard.require_single_call(model, probe, module, name)
        with torch.no_grad():
            shape: tuple[int, ...] = tuple(forward_until(model, probe, {name: module})[name].shape)
        if len(shape) != 4:
            raise InputError(f"layer {name!r} has no feature maps (output {tuple(shape)})")
        for channel in maps:
            if isinstance(channel, bool) or not 0 <= int(channel) < shape[1]:
                raise SelectionError(f"map {channel} is outside {name!r}'s {shape[1]} maps")
        centre = (shape[2] // 2, shape[3] // 2)
        field = receptive_fields(model, (1, spec.channels, *size), device=device).get(name)
        box = field.box(*centre, size) if field is not None and not field.is_global else None
        jitter = settings.jitter if settings.jitter is not None else _jitter(field, size)
        identity = {"settings": settings.record(), "preprocessing": _spec_record(spec)}
        keys = {int(c): unit_key(model, CACHE_FORMAT, name, int(c), **identity) for c in maps}
        found: dict[int, DreamResult] = {}
        if cache is not None:
            for channel, key in keys.items():
                hit = _from_cache(cache, key, name, channel, settings, top1.get(channel))
                if hit is not None:
                    found[channel] = hit
        missing = [c for c in dict.fromkeys(int(c) for c in maps) if c not in found]
        total = check_work(
            len(missing) * settings.steps, max_work, what="dream", unit="optimisation steps"
        )
        if progress is not None:
            progress(0, total)
        done = 0
        for first in range(0, len(missing), batch_size):
            group = missing[first : first + batch_size]
            problem = _Problem(
                model, name, module, spec, settings, size, centre, jitter, device, dtype
            )

            def advance(steps: int) -> None:
                nonlocal done
                done += steps
                if progress is not None:
                    progress(done, total)

            for result in problem.solve(group, box, keys, top1, advance):
                found[result.map] = result
                if cache is not None:
                    cache.write(CACHE_KIND, result.key, _record(result), result.image)
    return [found[int(c)] for c in maps]


@dataclass
class _Problem:
    """One batch of units: their spectra, generators and Adam state."""

    model: nn.Module
    name: str
    module: nn.Module
    spec: Preprocessing
    settings: DreamSettings
    size: tuple[int, int]
    centre: tuple[int, int]
    jitter: int
    device: torch.device
    dtype: torch.dtype

    def solve(
        self,
        maps: list[int],
        box: Box | None,
        keys: Mapping[int, str],
        top1: Mapping[int, float],
        advance: Callable[[int], None],
    ) -> list[DreamResult]:
        started = time.perf_counter()
        height, width = self.size
        generators = [self._generator(channel) for channel in maps]
        spectrum = torch.stack(
            [
                torch.randn((3, height, width // 2 + 1, 2), generator=g) * SPECTRUM_SD
                for g in generators
            ]
        ).to(self.device, torch.float32)
        spectrum.requires_grad_(True)
        optimiser = torch.optim.Adam([spectrum], lr=self.settings.learning_rate)
        scale = _spectrum_scale(height, width, self.settings.decay_power).to(self.device)
        colours = _colour_matrix().to(self.device)
        channels = torch.tensor(maps, device=self.device)
        trajectory = []
        redirect = _RedirectedReLUs() if self.settings.redirect_relu else nullcontext()
        with torch.enable_grad(), redirect:
            for _ in range(self.settings.steps):
                rgb = _image(spectrum, scale, colours, (height, width))
                moved = _transformed(rgb, [self._draw(g, self.jitter) for g in generators])
                values = self._objective(moved, channels)
                (gradient,) = torch.autograd.grad(-values.sum(), [spectrum])
                optimiser.zero_grad(set_to_none=True)
                spectrum.grad = gradient
                optimiser.step()
                trajectory.append(values.detach().to("cpu", torch.float64))
                advance(len(maps))
        with torch.no_grad():
            rgb = _image(spectrum.detach(), scale, colours, (height, width))
            pictures = (rgb * 255).round().clamp(0, 255).to(torch.uint8)
            final = self._maps(pictures.to(rgb.dtype) / 255)[torch.arange(len(maps)), channels]
        seconds = (time.perf_counter() - started) / len(maps)
        path = torch.stack(trajectory, dim=1).numpy() if trajectory else np.zeros((len(maps), 0))
        results = []
        for index, channel in enumerate(maps):
            unit_map = final[index].to("cpu", torch.float64)
            centre = float(unit_map[self.centre])
            mean = float(unit_map.mean())
            results.append(
                DreamResult(
                    layer=self.name,
                    map=channel,
                    settings=self.settings,
                    image=pictures[index].permute(1, 2, 0).cpu().numpy().copy(),
                    activation=centre if self.settings.objective == "neuron" else mean,
                    centre=centre,
                    mean=mean,
                    peak=float(unit_map.max()),
                    position=self.centre,
                    box=box,
                    jitter=self.jitter,
                    trajectory=tuple(float(v) for v in path[index]),
                    dataset_top1=top1.get(channel),
                    seconds=seconds,
                    cached=False,
                    key=keys[channel],
                )
            )
        return results

    def _generator(self, channel: int) -> torch.Generator:
        """The unit's own random stream: seeded by (seed, layer, map) only."""
        text = f"{self.settings.seed}:{self.name}:{channel}".encode()
        seed = int.from_bytes(hashlib.sha256(text).digest()[:8], "little")
        return torch.Generator().manual_seed(seed)

    @staticmethod
    def _draw(generator: torch.Generator, jitter: int) -> tuple[float, float, float, float]:
        """A random (shift y, shift x, scale, rotation in degrees) for one step."""
        dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
        scale = SCALES[int(torch.randint(len(SCALES), (1,), generator=generator))]
        angle = ROTATIONS[int(torch.randint(len(ROTATIONS), (1,), generator=generator))]
        return float(dy), float(dx), scale, float(angle)

    def _maps(self, rgb: Tensor) -> Tensor:
        x = normalise(rgb.to(self.dtype), self.spec)
        out: Tensor = forward_until(self.model, x, {self.name: self.module}, keep=_kept)[self.name]
        return out

    def _objective(self, rgb: Tensor, channels: Tensor) -> Tensor:
        maps = self._maps(rgb)[torch.arange(len(channels)), channels]  # (B, h, w)
        if self.settings.objective == "neuron":
            return maps[:, self.centre[0], self.centre[1]].float()
        return maps.flatten(1).mean(dim=1).float()


class RedirectedReLU(ReverseRule):
    """ReLU whose gradient is redirected when it would stop everything (see the module)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def saved(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return (x > 0,)

    def backward(self, signal: Tensor, *saved: Tensor) -> Tensor:
        (positive,) = saved
        own = signal * positive
        if own.dim() == 0:
            return own
        through = own.flatten(1).abs().amax(dim=1) > 0  # per image of the batch
        lowering = ~positive & (signal > 0)  # the loss falls as the input falls
        redirected = torch.where(lowering, torch.zeros_like(signal), signal)
        return torch.where(through.view(-1, *[1] * (signal.dim() - 1)), own, redirected)


class _RedirectedReLUs(CallMode):
    """Every ReLU call, whatever its spelling (the op table's), with :class:`RedirectedReLU`."""

    def handle(self, call: TorchCall) -> Any:
        entry = OPS.get(call.func)
        if isinstance(entry, ReLU):
            parsed = entry.parse(call)
            x = parsed.input
            if isinstance(x, Tensor) and x.requires_grad:
                return in_place(x, apply_rule(x, RedirectedReLU()), parsed.inplace)
        return call.run()


def _jitter(field: ReceptiveField | None, size: tuple[int, int]) -> int:
    """:data:`JITTER_AT_224` scaled to what the unit sees: its field, within the image."""
    seen = min(size) if field is None or field.is_global else min(*field.size, *size)
    return max(1, round(JITTER_AT_224 * seen / 224))


def _kept(name: str, output: Any) -> Tensor:
    return output_tensor(name, output)


def _spectrum_scale(height: int, width: int, decay_power: float) -> Tensor:
    """``1 / max(frequency, 1 / max(H, W)) ** decay_power``, times ``sqrt(H W)`` (with the
    inverse FFT's ``1 / (H W)`` this makes the transform unitary)."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(width, dtype=torch.float64)[None, :]
    frequency = torch.sqrt(fx * fx + fy * fy)
    scale = 1.0 / frequency.clamp(min=1.0 / max(height, width)) ** decay_power
    return (scale * math.sqrt(height * width)).to(torch.float32)[None, None]


def _colour_matrix() -> Tensor:
    """:data:`COLOUR_CORRELATION_SQRT` divided by its largest column norm."""
    matrix = torch.tensor(COLOUR_CORRELATION_SQRT, dtype=torch.float32)
    normalised: Tensor = matrix / matrix.norm(dim=0).max()
    return normalised


def _image(spectrum: Tensor, scale: Tensor, colours: Tensor, size: tuple[int, int]) -> Tensor:
    """The spectrum ``(B, 3, H, W//2+1, 2)`` as RGB ``(B, 3, H, W)`` in (0, 1)."""
    complex_spectrum = torch.view_as_complex(spectrum.contiguous()) * scale
    decorrelated = torch.fft.irfft2(complex_spectrum, s=size) * IMAGE_SCALE
    mixed = torch.einsum("ij,bjhw->bihw", colours, decorrelated)
    return torch.sigmoid(mixed)


def _transformed(rgb: Tensor, draws: Sequence[tuple[float, float, float, float]]) -> Tensor:
    """Each image shifted, scaled and rotated about its centre by its draw, in one bilinear
    resampling; the canvas it uncovers is mid-grey."""
    height, width = rgb.shape[-2:]
    thetas = []
    for dy, dx, scale, angle in draws:
        radians = math.radians(angle)
        cos, sin = math.cos(radians) / scale, math.sin(radians) / scale
        thetas.append(
            [
                [cos, -sin * height / width, -2 * dx / width],
                [sin * width / height, cos, -2 * dy / height],
            ]
        )
    theta = torch.tensor(thetas, dtype=rgb.dtype, device=rgb.device)
    grid = F.affine_grid(theta, list(rgb.shape), align_corners=False)
    shifted = F.grid_sample(
        rgb - GREY, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return shifted + GREY


def _spec_record(spec: Preprocessing) -> dict[str, Any]:
    """The preprocessing as JSON values, the mean image by its digest."""
    record = {k: v for k, v in spec.record().items() if k != "mean_image"}
    record = {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}
    if spec.mean_image is not None:
        digest = hashlib.sha256(np.ascontiguousarray(spec.mean_image, dtype=np.float32).tobytes())
        record["mean_image"] = digest.hexdigest()
    return record


def _record(result: DreamResult) -> dict[str, Any]:
    return {
        **unit_header(CACHE_FORMAT, result.key, result.layer, result.map),
        "activation": result.activation,
        "centre": result.centre,
        "mean": result.mean,
        "peak": result.peak,
        "position": list(result.position),
        "box": list(result.box) if result.box is not None else None,
        "jitter": result.jitter,
        "trajectory": list(result.trajectory),
        "image_shape": list(result.image.shape),
        "seconds": result.seconds,
    }


def _from_cache(
    cache: ResultCache,
    key: str,
    layer: str,
    channel: int,
    settings: DreamSettings,
    top1: float | None,
) -> DreamResult | None:
    """The cached result of ``key``, if its document and picture are sound and agree."""
    record = cache.read(CACHE_KIND, key, DreamRecord)
    if record is None or record.format != CACHE_FORMAT or record.key != key:
        return None
    if record.layer != layer or record.map != channel or len(record.trajectory) != settings.steps:
        return None
    picture = cache.read_picture(CACHE_KIND, key)
    if picture is None or tuple(picture.shape) != tuple(record.image_shape):
        return None
    return DreamResult(
        layer=layer,
        map=channel,
        settings=settings,
        image=picture,
        activation=record.activation,
        centre=record.centre,
        mean=record.mean,
        peak=record.peak,
        position=(record.position[0], record.position[1]),
        box=record.box,
        jitter=record.jitter,
        trajectory=tuple(record.trajectory),
        dataset_top1=top1,
        seconds=record.seconds,
        cached=True,
        key=key,
    )
