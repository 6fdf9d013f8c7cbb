"""Tuning curves: what a map responds to among generated stimuli, as a physiologist measures
a cell.

Every map of a layer is shown the same synthetic stimuli at the model's input size, through
the model's own preprocessing: sinusoidal gratings (:data:`ORIENTATIONS` orientations ×
:data:`PERIODS` spatial periods × :data:`PHASES` phases, full contrast, grey) and uniform
colour fields (:data:`HUES` hues × :data:`SATURATIONS` × :data:`BRIGHTNESSES`). A map's
response to a stimulus is its maximum over positions. No data is needed, so this works on
any model.

**Orientation** is the direction *across* the stripes (the grating's wave vector), in
degrees counter-clockwise from image-right, in [0, 180): 0° varies left to right (vertical
stripes), 90° top to bottom (horizontal stripes). It is the angle at which the map's
filter has its Fourier peak, so the two can be compared directly.

**Orientation selectivity index** ``OSI = 1 − circular variance`` of the tuning curve (the
response per orientation at the preferred period, the maximum over phase, rectified):
``|Σ r(θ) e^{2iθ}| / Σ r(θ)``; 0 for a map that responds equally to every orientation (or
not at all), 1 for a map that responds to one orientation only (Ringach et al. 2002).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.engine.engine import Deconvnet
from deconvnet.engine.layers import resolve_layer
from deconvnet.engine.receptive import receptive_fields
from deconvnet.errors import InputError, SelectionError
from deconvnet.inputs.images import preprocess
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.models import naming
from deconvnet.models.card import batch_size_for, card_of, model_device

Progress = Callable[[int, int | None], None]

ORIENTATIONS = 16
PERIODS = 4
PHASES = 4
HUES = 24
SATURATIONS = (1 / 3, 2 / 3, 1.0)
BRIGHTNESSES = (0.5, 1.0)
OSI_MIN = 0.3
"""Maps at or above this index are called oriented (pages, the filter check)."""
SHORTEST_PERIOD = 2.5
"""Pixels per cycle of the finest grating: just above the Nyquist limit of 2."""
LONGEST_PERIOD_MIN = 8.0
"""The coarsest grating's period is the layer's receptive field, but at least this."""
DEFAULT_BATCH_SIZE = 32
_MID_GREY = 127.5
_MAX_8BIT = 255
_IMAGE_RANK = 4


@dataclass(frozen=True)
class Stimuli:
    """The stimulus set shown to a layer.

    Attributes
    ----------
    size : ``(H, W)`` of every stimulus: the model's input size.
    orientations : degrees in [0, 180), the direction across the stripes (module docstring).
    periods : pixels per cycle, ascending (geometric from :data:`SHORTEST_PERIOD` to the
        layer's receptive field, at least :data:`LONGEST_PERIOD_MIN`, at most the input).
    phases : degrees, of the cosine at the image centre.
    colours : ``(hue in degrees, saturation, brightness)`` of each colour field (HSV).
    """

    size: tuple[int, int]
    orientations: tuple[float, ...]
    periods: tuple[float, ...]
    phases: tuple[float, ...]
    colours: tuple[tuple[float, float, float], ...]

    def grating(self, orientation: int, period: int, phase: int) -> np.ndarray:
        """The grating with these indices, ``(H, W, 3)`` uint8 RGB, exactly as fed."""
        return grating_image(
            self.size, self.orientations[orientation], self.periods[period], self.phases[phase]
        )

    def colour(self, index: int) -> tuple[int, int, int]:
        """The RGB (0..255) of colour field ``index``."""
        return hsv_rgb(*self.colours[index])

    def images(self) -> list[np.ndarray]:
        """Every stimulus in response order: the gratings (orientation, period, phase, C
        order), then the colour fields."""
        gratings = [
            self.grating(o, p, f)
            for o in range(len(self.orientations))
            for p in range(len(self.periods))
            for f in range(len(self.phases))
        ]
        fields = [
            np.broadcast_to(np.array(self.colour(i), np.uint8), (*self.size, 3)).copy()
            for i in range(len(self.colours))
        ]
        return gratings + fields


def stimuli(size: tuple[int, int], receptive_field: int | None = None) -> Stimuli:
    """The standard stimulus set at input ``size`` for a layer whose units see
    ``receptive_field`` pixels (None: the input's shorter side)."""
    side = min(size)
    longest = max(float(receptive_field or side), LONGEST_PERIOD_MIN)
    longest = max(min(longest, float(side)), SHORTEST_PERIOD)
    ratio = (longest / SHORTEST_PERIOD) ** (1 / (PERIODS - 1))
    return Stimuli(
        size=(int(size[0]), int(size[1])),
        orientations=tuple(180.0 * i / ORIENTATIONS for i in range(ORIENTATIONS)),
        periods=tuple(SHORTEST_PERIOD * ratio**i for i in range(PERIODS)),
        phases=tuple(360.0 * i / PHASES for i in range(PHASES)),
        colours=tuple(
            (360.0 * h / HUES, s, v) for h in range(HUES) for s in SATURATIONS for v in BRIGHTNESSES
        ),
    )


def grating_image(
    size: tuple[int, int], orientation: float, period: float, phase: float
) -> np.ndarray:
    """A full-contrast grey sinusoidal grating, ``(H, W, 3)`` uint8: ``127.5 + 127.5 cos(2π
    (x cos θ − y sin θ) / period + φ)`` with ``x`` right, ``y`` down from the centre."""
    height, width = size
    theta, phi = math.radians(orientation), math.radians(phase)
    y = np.arange(height, dtype=np.float64)[:, None] - (height - 1) / 2
    x = np.arange(width, dtype=np.float64)[None, :] - (width - 1) / 2
    wave = np.cos(2 * math.pi * (x * math.cos(theta) - y * math.sin(theta)) / period + phi)
    grey = np.clip(np.rint(_MID_GREY + _MID_GREY * wave), 0, _MAX_8BIT).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def hsv_rgb(hue: float, saturation: float, brightness: float) -> tuple[int, int, int]:
    """8-bit RGB of an HSV colour (hue in degrees)."""
    red, green, blue = colorsys.hsv_to_rgb(hue / 360.0, saturation, brightness)
    return round(red * _MAX_8BIT), round(green * _MAX_8BIT), round(blue * _MAX_8BIT)


@dataclass(frozen=True)
class UnitTuning:
    """The tuning of one map, in plain numbers (:meth:`to_dict` for a unit's JSON).

    Attributes
    ----------
    curve : the orientation tuning curve: per orientation, the response at the preferred
        period, the maximum over phase.
    preferred_orientation : degrees, the best grating's orientation.
    preferred_period, preferred_frequency : the best grating's pixels per cycle, and its
        inverse (cycles per pixel).
    osi : orientation selectivity index, ``1 − circular variance`` of ``max(curve, 0)``.
    best_grating : indices ``(orientation, period, phase)`` of the best grating.
    best_response : the map's maximum over positions for it.
    preferred_colour : RGB of the colour field with the largest response, None when every
        colour field gives the same response (a map that flat fields do not drive: it has no
        colour preference to show); ``hue_curve`` the response per hue, the maximum over
        saturation and brightness.
    """

    layer: str
    channel: int
    size: tuple[int, int]
    orientations: tuple[float, ...]
    curve: tuple[float, ...]
    preferred_orientation: float
    preferred_period: float
    preferred_frequency: float
    osi: float
    best_grating: tuple[int, int, int]
    best_phase: float
    best_response: float
    preferred_colour: tuple[int, int, int] | None
    preferred_colour_hsv: tuple[float, float, float] | None
    colour_response: float
    hues: tuple[float, ...]
    hue_curve: tuple[float, ...]

    def grating_image(self) -> np.ndarray:
        """The best grating as it was fed, ``(H, W, 3)`` uint8 RGB."""
        return grating_image(
            self.size, self.preferred_orientation, self.preferred_period, self.best_phase
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields (numbers and lists)."""
        return {
            "layer": self.layer,
            "map": self.channel,
            "input_size": list(self.size),
            "orientation_convention": (
                "degrees counter-clockwise from image-right across the stripes (wave vector); "
                "0 = vertical stripes"
            ),
            "orientations": list(self.orientations),
            "orientation_curve": list(self.curve),
            "preferred_orientation": self.preferred_orientation,
            "preferred_period_px": self.preferred_period,
            "preferred_frequency_cycles_per_px": self.preferred_frequency,
            "osi": self.osi,
            "best_grating": {
                "orientation": self.preferred_orientation,
                "period_px": self.preferred_period,
                "phase": self.best_phase,
                "response": self.best_response,
            },
            "preferred_colour_rgb": _listed(self.preferred_colour),
            "preferred_colour_hsv": _listed(self.preferred_colour_hsv),
            "colour_response": self.colour_response,
            "hues": list(self.hues),
            "hue_curve": list(self.hue_curve),
        }


@dataclass(frozen=True, eq=False)
class LayerTuning:
    """The responses of every measured map of one layer to the whole :class:`Stimuli`.

    Attributes
    ----------
    layer : the layer as shown (alias, else dotted name).
    channels : LongTensor (M,) — the maps measured.
    gratings : Tensor (M, orientations, periods, phases) float64 — max over positions.
    colours : Tensor (M, colour fields) float64.
    """

    layer: str
    channels: Tensor
    stimuli: Stimuli
    gratings: Tensor
    colours: Tensor

    @property
    def curves(self) -> Tensor:
        """(M, orientations): the tuning curve of each map (its preferred period, max over
        phase)."""
        by_period = self.gratings.amax(dim=3)  # (M, O, P)
        best_period = by_period.amax(dim=1).argmax(dim=1)  # (M,)
        index = best_period.view(-1, 1, 1).expand(-1, by_period.shape[1], 1)
        return by_period.gather(2, index).squeeze(2)

    @property
    def osi(self) -> Tensor:
        """(M,) orientation selectivity index of each map."""
        return selectivity(self.curves, self.stimuli.orientations)

    @property
    def best(self) -> Tensor:
        """(M, 3) indices (orientation, period, phase) of each map's best grating (the
        first in stimulus order on a tie)."""
        flat = self.gratings.flatten(1).argmax(dim=1)
        _, periods, phases = self.gratings.shape[1:]
        return torch.stack(
            [flat // (periods * phases), (flat // phases) % periods, flat % phases], dim=1
        )

    @property
    def preferred_orientation(self) -> Tensor:
        """(M,) degrees."""
        angles = torch.tensor(self.stimuli.orientations, dtype=torch.float64)
        return angles[self.best[:, 0]]

    def unit(self, channel: int) -> UnitTuning:
        """The tuning of map ``channel`` in plain numbers."""
        found = (self.channels == channel).nonzero()
        if found.numel() == 0:
            raise SelectionError(f"map {channel} of {self.layer} was not measured")
        row = int(found[0, 0])
        orientation, period, phase = (int(v) for v in self.best[row])
        colours = self.colours[row]
        best_colour = int(colours.argmax())
        per_hue = colours.view(HUES, -1).amax(dim=1)
        driven = bool(colours.max() > colours.min())
        hsv = self.stimuli.colours[best_colour] if driven else None
        return UnitTuning(
            layer=self.layer,
            channel=channel,
            size=self.stimuli.size,
            orientations=self.stimuli.orientations,
            curve=tuple(float(v) for v in self.curves[row]),
            preferred_orientation=self.stimuli.orientations[orientation],
            preferred_period=self.stimuli.periods[period],
            preferred_frequency=1.0 / self.stimuli.periods[period],
            osi=float(self.osi[row]),
            best_grating=(orientation, period, phase),
            best_phase=self.stimuli.phases[phase],
            best_response=float(self.gratings[row, orientation, period, phase]),
            preferred_colour=self.stimuli.colour(best_colour) if driven else None,
            preferred_colour_hsv=hsv,
            colour_response=float(colours[best_colour]),
            hues=tuple(360.0 * h / HUES for h in range(HUES)),
            hue_curve=tuple(float(v) for v in per_hue),
        )


def _listed(values: tuple[float, ...] | tuple[int, ...] | None) -> list[object] | None:
    return None if values is None else list(values)


def selectivity(curves: Tensor, orientations: Sequence[float]) -> Tensor:
    """``1 − circular variance`` of each row of ``curves`` (..., O), rectified; 0 where a
    curve has no positive response."""
    response = curves.to(torch.float64).clamp(min=0)
    doubled = torch.tensor([2 * math.radians(a) for a in orientations], dtype=torch.float64)
    resultant = torch.hypot((response * doubled.cos()).sum(-1), (response * doubled.sin()).sum(-1))
    total = response.sum(-1)
    return torch.where(total > 0, resultant / total.clamp(min=1e-300), torch.zeros_like(total))


def tuning(
    model: nn.Module,
    layer: str | nn.Module,
    *,
    maps: Sequence[int] | None = None,
    preprocessing: Preprocessing | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
) -> LayerTuning:
    """Show every stimulus to ``model`` and keep each map's maximum over positions.

    Parameters
    ----------
    layer : a layer as :func:`~deconvnet.engine.layers.resolve_layer` takes it; its output
        is (B, C, H, W) or (B, C).
    maps : the maps to keep (default all).
    preprocessing : the input convention (default the model card's); stimuli are made at
        its ``input_size`` and fed without resizing.
    batch_size : stimuli per forward pass.

    Raises
    ------
    InputError
        The model says nothing of its preprocessing and none is given.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    card = card_of(model)
    spec = preprocessing or card.preprocessing
    if spec is None:
        raise InputError("the model does not say its input size; give preprocessing=")
    name, _ = resolve_layer(model, layer)
    if device is None:
        device = model_device(model)
    size = card.fixed_size or spec.input_size
    fields = receptive_fields(model, (1, spec.channels, *size), device)
    field = fields.get(name)
    rf = None if field is None or field.is_global else max(field.size)
    shown = stimuli(size, rf)
    fed = replace(spec, resize_rule="none", resize_to=None)
    images = shown.images()
    batch_size = batch_size_for(model, batch_size, "tuning")
    parts: list[Tensor] = []
    with Deconvnet(model) as net:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            # every batch the same size: the engine checks a layer's calls once per shape
            padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
            x = torch.cat([preprocess(image, fed, device, min_side=1) for image in padded])
            output = net.layer_output(x, name)[: len(chunk)]
            if output.dim() == _IMAGE_RANK:
                output = output.flatten(2).amax(dim=2)
            elif output.dim() != 2:
                raise InputError(
                    f"layer {name!r} gives {tuple(output.shape)}: tuning needs maps (B, C, H, W) "
                    "or units (B, C)"
                )
            parts.append(output.detach().to("cpu", torch.float64))
            if progress is not None:
                progress(min(start + batch_size, len(images)), len(images))
    responses = torch.cat(parts)  # (N, C)
    channels = _channels(maps, responses.shape[1], name)
    responses = responses[:, channels].T  # (M, N)
    count = ORIENTATIONS * PERIODS * PHASES
    return LayerTuning(
        layer=naming.display_name(naming.aliases_of(model), name),
        channels=channels,
        stimuli=shown,
        gratings=responses[:, :count].reshape(-1, ORIENTATIONS, PERIODS, PHASES).contiguous(),
        colours=responses[:, count:].contiguous(),
    )


def _channels(maps: Sequence[int] | None, count: int, layer: str) -> Tensor:
    if maps is None:
        return torch.arange(count)
    channels = torch.tensor(list(maps), dtype=torch.long)
    if channels.numel() == 0 or bool((channels < 0).any() | (channels >= count).any()):
        raise SelectionError(f"maps must be in 0..{count - 1} for layer {layer!r}, got {maps}")
    return channels
