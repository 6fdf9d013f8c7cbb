"""Selections: which activations of a layer seed the reverse pass, as small values.

Each selection turns a layer output ``y`` of shape ``(B, C, *spatial)`` (or ``(B, F)`` for
fc layers) into a :class:`Seeds`: ``K`` seeds per image, each one the layer output with every
activation zeroed except the selected one(s), which keep their forward value
(Zeiler & Fergus 2014, §2.1: "to examine a given convnet activation, we set all other
activations in the layer to zero"). Every image in a batch chooses for itself; ties go to
the first maximum in row-major order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from deconvnet.errors import SelectionError

_PLANE_DIMS = 2
_MAP_RANK = 4
JOINT_CHANNEL = -1
"""``channels`` entry for a joint selection that spans several channels."""


@dataclass(frozen=True)
class Seeds:
    """Resolved selection for one layer output.

    Attributes
    ----------
    channels : LongTensor (B, K)
    values : Tensor (B, K) — the seeded activation; for joint selections the largest one.
    positions : LongTensor (B, K, ndim) or None — index of the seeded activation in
        ``y[b, c]`` (``ndim`` = number of spatial dims; 0 for fc layers); None if joint.
    joint : Tensor (B, 1, *y.shape[1:]) or None — the seed itself for joint selections.
    """

    channels: Tensor
    values: Tensor
    positions: Tensor | None
    joint: Tensor | None

    @property
    def count(self) -> int:
        """K, the number of separate projections per image."""
        return int(self.channels.shape[1])

    @property
    def single_units_on_a_plane(self) -> bool:
        """Each seed one unit of a 2-D map: what the windowed reverse pass takes."""
        return self.positions is not None and self.positions.shape[-1] == _PLANE_DIMS

    def extents(self) -> Tensor | None:
        """LongTensor (B, K, 4): ``(top, left, bottom, right)`` of the seeded positions of each
        projection in its map, bounds inclusive; ``-1`` where nothing is seeded.

        Figures zoom to the receptive fields of these corners, for single units and joint
        seeds alike. None for layers without a 2-D map (fc units, 1-D or 3-D convolutions).
        """
        if self.positions is not None:
            if not self.single_units_on_a_plane:
                return None
            return torch.cat([self.positions, self.positions], dim=-1)
        assert self.joint is not None  # by construction: joint xor positions
        if self.joint.dim() != _PLANE_DIMS + 3:
            return None
        seeded = self.joint != 0  # (B, 1, C, H, W)
        rows = seeded.any(dim=(2, 4))  # (B, 1, H)
        cols = seeded.any(dim=(2, 3))  # (B, 1, W)
        top, bottom = _span(rows)
        left, right = _span(cols)
        return torch.stack([top, left, bottom, right], dim=-1)

    def materialize(self, y: Tensor, start: int, stop: int) -> Tensor:
        """Seeds ``start:stop`` as a tensor (stop - start, B, *y.shape[1:])."""
        if self.joint is not None:
            return self.joint.transpose(0, 1)[start:stop].to(y.dtype)
        assert self.positions is not None  # by construction: joint xor positions
        batch = y.shape[0]
        count = stop - start
        seed = torch.zeros((count, *y.shape), dtype=y.dtype, device=y.device)
        k_index = torch.arange(count, device=y.device).repeat_interleave(batch)
        b_index = torch.arange(batch, device=y.device).repeat(count)
        channels = self.channels[:, start:stop].T.reshape(-1)
        positions = self.positions[:, start:stop].transpose(0, 1).reshape(count * batch, -1)
        index = (k_index, b_index, channels, *positions.unbind(1))
        seed[index] = self.values[:, start:stop].T.reshape(-1).to(y.dtype)
        return seed


def _span(occupied: Tensor) -> tuple[Tensor, Tensor]:
    """First and last True index along the last dim (``-1`` for none)."""
    index = torch.arange(occupied.shape[-1], device=occupied.device)
    missing = torch.full_like(index, -1)
    first = torch.where(occupied, index, occupied.shape[-1]).amin(dim=-1)
    last = torch.where(occupied, index, missing).amax(dim=-1)
    return torch.where(last >= 0, first, -1), last


class Selection(ABC):
    """Base class: ``resolve(y) -> Seeds``; subclasses are frozen dataclasses.

    ``joint`` is True for selections that seed many activations in one projection; the
    engine's windowed fast path is only for single-unit seeds, so it skips those.
    """

    joint: ClassVar[bool] = False

    @abstractmethod
    def resolve(self, y: Tensor) -> Seeds:
        """The seeds for layer output ``y``."""

    @abstractmethod
    def describe(self) -> str:
        """Short text for labels and manifests, e.g. ``top:9``."""


def _require_maps(y: Tensor, what: str) -> None:
    if y.dim() < 3:
        raise SelectionError(
            f"{what} needs a layer with feature maps (B, C, H, W); this layer's output is "
            f"{tuple(y.shape)}: use Unit(i) or TopUnits(k) for fc layers"
        )


def _require_units(y: Tensor, what: str, instead: str) -> None:
    """Units are an fc layer's (B, F), or maps of one pixel each (B, C, 1, 1): a global
    pool's or a 1x1 classifier's output."""
    if y.dim() != 2 and not (y.dim() > 2 and all(size == 1 for size in y.shape[2:])):
        raise SelectionError(
            f"{what} needs an fc layer output (B, F) or 1x1 maps (B, C, 1, 1); got "
            f"{tuple(y.shape)}: use {instead}"
        )


def _check_channel(y: Tensor, channel: int) -> None:
    if not 0 <= channel < y.shape[1]:
        raise SelectionError(
            f"channel {channel} out of range: the layer has {y.shape[1]} (0..{y.shape[1] - 1})"
        )


def _one_channel(y: Tensor, channel: int) -> Tensor:
    """LongTensor (B, 1): ``channel`` (checked) for every image."""
    _check_channel(y, channel)
    return torch.full((y.shape[0], 1), channel, dtype=torch.long, device=y.device)


def _map_argmax(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Max value and its first row-major position for maps (B, K, *spatial)."""
    flat = maps.flatten(2)
    values, flat_index = flat.max(dim=2)  # torch returns the first maximal index
    shape = maps.shape[2:]
    coords = []
    for size in reversed(shape):
        coords.append(flat_index % size)
        flat_index = flat_index // size
    return values, torch.stack(coords[::-1], dim=-1)


def _unit_seeds(y: Tensor, channels: Tensor, positions: Tensor | None) -> Seeds:
    batch = y.shape[0]
    b = torch.arange(batch, device=y.device)[:, None].expand_as(channels)
    if positions is None:
        positions = torch.zeros((*channels.shape, y.dim() - 2), dtype=torch.long, device=y.device)
    index = (b, channels, *positions.unbind(-1))
    return Seeds(channels=channels, values=y[index].detach(), positions=positions, joint=None)


@dataclass(frozen=True)
class Neuron(Selection):
    """One activation ``y[c, *position]`` (same position for every image)."""

    channel: int
    position: tuple[int, ...]

    def __init__(self, channel: int, *position: int) -> None:
        object.__setattr__(self, "channel", int(channel))
        object.__setattr__(self, "position", tuple(int(p) for p in position))

    def resolve(self, y: Tensor) -> Seeds:
        _require_maps(y, "Neuron")
        _check_channel(y, self.channel)
        spatial = tuple(y.shape[2:])
        if len(self.position) != len(spatial) or not all(
            0 <= p < s for p, s in zip(self.position, spatial, strict=True)
        ):
            raise SelectionError(
                f"position {self.position} is outside the layer's maps of size {spatial}"
            )
        batch = y.shape[0]
        channels = torch.full((batch, 1), self.channel, dtype=torch.long, device=y.device)
        positions = torch.tensor(self.position, dtype=torch.long, device=y.device)
        return _unit_seeds(y, channels, positions.expand(batch, 1, -1))

    def describe(self) -> str:
        return f"neuron:{self.channel}," + ",".join(map(str, self.position))


@dataclass(frozen=True)
class MapMax(Selection):
    """The strongest activation of feature map ``channel``, per image (the paper's choice)."""

    channel: int

    def resolve(self, y: Tensor) -> Seeds:
        _require_maps(y, "MapMax")
        channels = _one_channel(y, self.channel)
        _, positions = _map_argmax(y[:, self.channel : self.channel + 1].detach())
        return _unit_seeds(y, channels, positions)

    def describe(self) -> str:
        return f"map:{self.channel}"


@dataclass(frozen=True)
class _Ranked(Selection):
    """The ``k`` strongest of a layer's maps or units (``k >= 1``), each separately."""

    k: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise SelectionError(f"{type(self).__name__} needs k >= 1, got {self.k}")

    def _require(self, available: int, what: str) -> None:
        if self.k > available:
            raise SelectionError(
                f"{type(self).__name__}({self.k}) but the layer has only {available} {what}"
            )


@dataclass(frozen=True)
class TopMaps(_Ranked):
    """The ``k`` maps with the largest maximum, each seeded at its own argmax, separately.

    Maps are ranked by their maximum, descending; equal maxima keep channel order.
    """

    def resolve(self, y: Tensor) -> Seeds:
        _require_maps(y, "TopMaps")
        self._require(y.shape[1], "maps")
        maxima, positions = _map_argmax(y.detach())
        order = torch.sort(maxima, dim=1, descending=True, stable=True).indices[:, : self.k]
        picked = positions.gather(1, order[..., None].expand(-1, -1, positions.shape[-1]))
        return _unit_seeds(y, order, picked)

    def describe(self) -> str:
        return f"top:{self.k}"


@dataclass(frozen=True)
class Unit(Selection):
    """Unit ``index`` of an fc layer output (B, F), or of 1x1 maps (B, C, 1, 1)."""

    index: int

    def resolve(self, y: Tensor) -> Seeds:
        _require_units(y, "Unit", "Neuron or MapMax")
        return _unit_seeds(y, _one_channel(y, self.index), None)

    def describe(self) -> str:
        return f"unit:{self.index}"


@dataclass(frozen=True)
class TopUnits(_Ranked):
    """The ``k`` strongest units of an fc layer (or of 1x1 maps, e.g. a global pool's
    output), each projected separately."""

    def resolve(self, y: Tensor) -> Seeds:
        _require_units(y, "TopUnits", "TopMaps")
        self._require(y.shape[1], "units")
        scores = y.detach().flatten(1)  # (B, C, 1, 1) maps hold one unit each
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, : self.k]
        return _unit_seeds(y, order, None)

    def describe(self) -> str:
        return f"topunits:{self.k}"


@dataclass(frozen=True, eq=False)
class Units(Selection):
    """Several single activations per image, each projected separately.

    ``channels`` (K,) and ``positions`` (K, 2) for a batch of one image, or (B, K) and
    (B, K, 2) for B images: seed ``k`` of image ``b`` keeps only
    ``y[b, channels[b, k], *positions[b, k]]``. Images with different numbers of units:
    :class:`UnitList`.
    """

    channels: Tensor
    positions: Tensor

    def resolve(self, y: Tensor) -> Seeds:
        channels = self.channels.to(device=y.device, dtype=torch.long)
        positions = self.positions.to(device=y.device, dtype=torch.long)
        if channels.dim() == 1:
            channels, positions = channels[None], positions[None]
        if y.dim() != _MAP_RANK or y.shape[0] != channels.shape[0]:
            raise SelectionError(
                f"Units for {channels.shape[0]} image(s) needs their maps (B, C, H, W), "
                f"got {tuple(y.shape)}"
            )
        images = torch.arange(y.shape[0], device=y.device)[:, None].expand_as(channels)
        values = _unit_values(y, images, channels, positions, "Units")
        return Seeds(channels=channels, values=values, positions=positions, joint=None)

    def describe(self) -> str:
        return f"units:{int(self.channels.numel())}"


@dataclass(frozen=True, eq=False)
class UnitList:
    """Single activations of a batch, any number per image, each projected on its own
    (:meth:`Deconvnet.project_units <deconvnet.engine.engine.Deconvnet.project_units>`):
    unit ``n`` is ``y[images[n], channels[n], *positions[n]]``.

    ``images`` and ``channels`` are LongTensors (N,), ``positions`` (N, 2).
    """

    images: Tensor
    channels: Tensor
    positions: Tensor

    def __len__(self) -> int:
        return int(self.channels.shape[0])

    def values(self, y: Tensor) -> Tensor:
        """The activations (N,) of the units in layer output ``y`` (B, C, H, W), checked."""
        if y.dim() != _MAP_RANK:
            raise SelectionError(f"UnitList needs maps (B, C, H, W), got {tuple(y.shape)}")
        images, channels, positions = (
            t.to(device=y.device, dtype=torch.long)
            for t in (self.images, self.channels, self.positions)
        )
        if bool(((images < 0) | (images >= y.shape[0])).any()):
            raise SelectionError(f"UnitList names an image outside the batch of {y.shape[0]}")
        return _unit_values(y, images, channels, positions, "UnitList")


def _unit_values(
    y: Tensor, images: Tensor, channels: Tensor, positions: Tensor, what: str
) -> Tensor:
    """``y[images, channels, *positions]``, refused when a unit lies outside the maps."""
    limits = torch.tensor(y.shape[2:], device=y.device)
    if bool((channels < 0).any() | (channels >= y.shape[1]).any()) or bool(
        ((positions < 0) | (positions >= limits)).any()
    ):
        raise SelectionError(
            f"{what} has a channel or position outside the layer's maps {tuple(y.shape[1:])}"
        )
    return y.detach()[images, channels, positions[..., 0], positions[..., 1]]


def _joint(y: Tensor, keep: Tensor, channel: int, rescale: bool = False) -> Seeds:
    seed = torch.where(keep, y.detach(), torch.zeros((), dtype=y.dtype, device=y.device))
    if rescale:
        flat = seed.flatten(1)
        low = flat.min(dim=1).values.view(-1, *([1] * (seed.dim() - 1)))
        seed = seed - low
        high = seed.flatten(1).max(dim=1).values.view_as(low)
        seed = torch.where(high > 0, seed / torch.where(high > 0, high, 1), seed)
    batch = y.shape[0]
    masked = torch.where(
        keep, y.detach(), torch.full((), -torch.inf, dtype=y.dtype, device=y.device)
    )
    values = masked.flatten(1).max(dim=1).values
    values = torch.where(torch.isfinite(values), values, torch.zeros_like(values))
    channels = torch.full((batch, 1), channel, dtype=torch.long, device=y.device)
    return Seeds(channels=channels, values=values[:, None], positions=None, joint=seed[:, None])


@dataclass(frozen=True)
class WholeMap(Selection):
    """Every activation of map ``channel`` jointly, at its forward values."""

    joint: ClassVar[bool] = True

    channel: int

    def resolve(self, y: Tensor) -> Seeds:
        _require_maps(y, "WholeMap")
        _check_channel(y, self.channel)
        keep = torch.zeros(y.shape, dtype=torch.bool, device=y.device)
        keep[:, self.channel] = True
        return _joint(y, keep, self.channel)

    def describe(self) -> str:
        return f"whole:{self.channel}"


@dataclass(frozen=True)
class Threshold(Selection):
    """Every activation ``>= threshold`` in the whole layer, jointly (the old Caffe demo: 150).

    ``rescale=True`` reproduces a quirk of that demo: its display function rescaled the
    thresholded blob in place to [0, 1] (``x -= x.min(); x /= x.max()``) before the inverse
    pass read it. ``values`` still report the raw activations.
    """

    joint: ClassVar[bool] = True

    threshold: float
    rescale: bool = False

    def resolve(self, y: Tensor) -> Seeds:
        return _joint(y, y.detach() >= self.threshold, JOINT_CHANNEL, self.rescale)

    def describe(self) -> str:
        return f"threshold:{self.threshold:g}" + (",rescaled" if self.rescale else "")


@dataclass(frozen=True, eq=False)
class Mask(Selection):
    """Activations where ``mask`` is true, jointly; ``mask`` broadcasts to (B, C, *spatial)."""

    joint: ClassVar[bool] = True

    mask: Tensor

    def resolve(self, y: Tensor) -> Seeds:
        mask = torch.as_tensor(self.mask, device=y.device)
        try:
            keep = torch.broadcast_to(mask.bool(), y.shape)
        except RuntimeError:
            raise SelectionError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the layer output "
                f"{tuple(y.shape)}"
            ) from None
        return _joint(y, keep, JOINT_CHANNEL)

    def describe(self) -> str:
        return "mask"
