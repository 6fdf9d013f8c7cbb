"""What :meth:`Deconvnet.project <deconvnet.engine.engine.Deconvnet.project>` returns.

The engine draws nothing, so it never imports the figures room. Jupyter still shows a
:class:`Projection` as a picture and ``Projection.save`` writes the CLI's files: the package
facade (``deconvnet/__init__.py``, which Python runs before any submodule) hands the figures
room's views to :func:`register_views`, and the methods call whatever was registered.
"""

from __future__ import annotations

import bisect
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from torch import Tensor

from deconvnet.engine.precision import dtype_name
from deconvnet.engine.receptive import Box, ReceptiveField
from deconvnet.engine.rules import ReversePolicy
from deconvnet.engine.selection import Selection
from deconvnet.engine.window import Window
from deconvnet.errors import InputError
from deconvnet.inputs.preprocessing import Preprocessing


class ProjectionViews(Protocol):
    """How the figures room shows and writes a :class:`Projection`."""

    def png(self, projection: Projection) -> bytes: ...

    def html(self, projection: Projection) -> str: ...

    def save(self, projection: Projection, out_dir: Path) -> Path: ...


_views: ProjectionViews | None = None


def register_views(views: ProjectionViews) -> None:
    """Use ``views`` for Jupyter's inline display and :meth:`Projection.save`."""
    global _views
    _views = views


@dataclass(frozen=True, eq=False, repr=False)
class Projection:
    """Result of :meth:`Deconvnet.project <deconvnet.engine.engine.Deconvnet.project>`.

    Attributes
    ----------
    images : Tensor (B, K, C_in, H, W) — each selection's projection in input space.
    channels : LongTensor (B, K) — the seeded map (``-1`` for joint selections that span
        several maps).
    positions : LongTensor (B, K, ndim) or None — where the seeded activation is in its
        map; None for joint selections.
    values : Tensor (B, K) — the seeded activation (for joint selections, the largest).
    layer : dotted name of the projected layer.
    selection, policy : what was asked.
    precision : the number type the reverse pass ran in (``"float32"``, ``"bfloat16"``…):
        the policy's precision resolved for the device, or the forward's own dtype where a
        reduced type does not apply (see :class:`~deconvnet.engine.engine.Deconvnet`).
    full_precision : BoolTensor (B, K) or None — after a reduced-precision pass, True
        where that projection was computed again in full precision (a value the reduced
        type could not hold, or a rounding error estimated to show in its 8-bit picture);
        None for a full-precision pass.
    extents : LongTensor (B, K, 4) or None — ``(top, left, bottom, right)`` of the seeded
        positions in the layer's map (inclusive; ``-1`` when nothing was seeded), for every
        selection kind; None for layers without 2-D maps. Figures zoom to their fields.
    layer_shape : the layer output's shape without the batch dim, e.g. ``(C, H, W)``.
    inputs : Tensor (B, C_in, H, W) or None — the batch that was projected, so pictures can
        show it beside the projections.
    preprocessing, categories, layer_alias : what the model says about itself (its card,
        :func:`~deconvnet.models.card.card_of`), so pictures show the image in true colours
        and name classes and layers.
    """

    images: Tensor
    channels: Tensor
    positions: Tensor | None
    values: Tensor
    layer: str
    selection: Selection
    policy: ReversePolicy
    precision: str = "float32"
    full_precision: Tensor | None = None
    extents: Tensor | None = None
    layer_shape: tuple[int, ...] | None = None
    inputs: Tensor | None = None
    preprocessing: Preprocessing | None = None
    categories: tuple[str, ...] | None = None
    layer_alias: str | None = None
    trace_field: Callable[[], ReceptiveField | None] | None = field(default=None)
    """Computes :attr:`receptive_field` on first use (one tracing pass of the model)."""

    @functools.cached_property
    def receptive_field(self) -> ReceptiveField | None:
        """The projected layer's receptive field for this input size (None if unknown)."""
        return self.trace_field() if self.trace_field is not None else None

    def precision_at(self, image: int, k: int) -> str:
        """The number type projection ``k`` of image ``image`` was computed in: the
        forward's own where a reduced-precision projection was redone in full precision."""
        if self.full_precision is not None and bool(self.full_precision[image, k]):
            return dtype_name(self.values.dtype)
        return self.precision

    def __repr__(self) -> str:
        """One line: layer, selection, rule and shape; never tensor dumps."""
        alias = f" ({self.layer_alias})" if self.layer_alias else ""
        return (
            f"Projection(layer={self.layer!r}{alias}, select={self.selection.describe()}, "
            f"rule={self.policy.rule}, images={tuple(self.images.shape)})"
        )

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write what ``deconvnet project`` writes (sheet, per-projection PNGs, manifest)
        into ``out_dir``; returns the manifest's path."""
        return self._require_views().save(self, Path(out_dir))

    def _repr_png_(self) -> bytes | None:
        """Jupyter's PNG view: the first image's sheet (None when no views registered)."""
        return _views.png(self) if _views is not None else None

    def _repr_html_(self) -> str | None:
        """Jupyter's rich view: the input with its units' boxes, then the sheet."""
        return _views.html(self) if _views is not None else None

    def _require_views(self) -> ProjectionViews:
        if _views is None:
            raise InputError("no figure views registered; import deconvnet (the package) first")
        return _views


@dataclass(frozen=True, eq=False)
class Contributions:
    """What :meth:`~deconvnet.engine.engine.Deconvnet.contributions` returns: per seeded unit,
    how much each map of an upstream layer gives it.

    Attributes
    ----------
    layer, upstream : dotted names of the unit's layer and of the layer below.
    channels : LongTensor (B, K) — the seeded maps; ``positions`` (B, K, 2) their units.
    values : Tensor (B, K) — the units' activations.
    contributions : Tensor (B, K, C_up) — per upstream map ``j``, the sum over the map of
        its activation times the reverse signal reaching it.
    policy : the reverse-pass semantics used.
    """

    layer: str
    upstream: str
    channels: Tensor
    positions: Tensor
    values: Tensor
    contributions: Tensor
    policy: ReversePolicy

    @property
    def rest(self) -> Tensor:
        """(B, K): the activation the upstream maps leave out (biases, other paths)."""
        return self.values - self.contributions.sum(dim=-1).to(self.values.dtype)


@dataclass(frozen=True, eq=False)
class UnitProjections:
    """What :meth:`Deconvnet.project_units <deconvnet.engine.engine.Deconvnet.project_units>`
    returns for one layer: each unit's projection on its window of the input (zero
    outside it), so a caller cuts out the boxes it shows without a full-size copy each.

    Attributes
    ----------
    layer : the layer as it was named.
    values : Tensor (N,) — the units' activations in the forward pass.
    windows : the projections, unit after unit, in the runs the reverse passes produced
        them (one size per run).
    reverse_passes : reverse passes run for these units: one each.
    precision, full_precision : as for :class:`Projection`; ``full_precision`` is a
        BoolTensor (N,) or None.
    """

    layer: str
    values: Tensor
    windows: tuple[Window, ...]
    reverse_passes: int
    precision: str = "float32"
    full_precision: Tensor | None = None

    def precision_at(self, n: int) -> str:
        """The number type unit ``n``'s projection was computed in (see
        :meth:`Projection.precision_at`)."""
        if self.full_precision is not None and bool(self.full_precision[n]):
            return dtype_name(self.values.dtype)
        return self.precision

    def crop(self, n: int, box: Box) -> Tensor:
        """Unit ``n``'s projection (C_in, h, w) on the input's rows ``box[0]:box[2]`` and
        columns ``box[1]:box[3]``."""
        starts = self._starts
        run = bisect.bisect_right(starts, n) - 1
        if not 0 <= n < len(self.values) or run < 0:
            raise IndexError(f"unit {n} of {len(self.values)}")
        return self.windows[run].part(n - starts[run], box)

    @functools.cached_property
    def _starts(self) -> list[int]:
        starts, first = [], 0
        for window in self.windows:
            starts.append(first)
            first += int(window.data.shape[0])
        return starts
