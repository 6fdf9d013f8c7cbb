"""What :meth:`Deconvnet.project <deconvnet.engine.engine.Deconvnet.project>` returns.

The engine draws nothing, so it never imports the figures room. Jupyter still shows a
:class:`Projection` as a picture: the package facade (``deconvnet/__init__.py``, which
Python runs before any submodule) hands the figures room's sheet renderer to
:func:`register_display`, and ``_repr_png_`` calls whatever was registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from deconvnet.engine.policies import ReversePolicy
from deconvnet.engine.selection import Selection

PngRenderer = Callable[["Projection"], bytes]

_png_renderer: PngRenderer | None = None


def register_display(png: PngRenderer) -> None:
    """Use ``png(projection) -> PNG bytes`` for Jupyter's inline display of projections."""
    global _png_renderer
    _png_renderer = png


@dataclass(frozen=True, eq=False)
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
    extents : LongTensor (B, K, 4) or None — ``(top, left, bottom, right)`` of the seeded
        positions in the layer's map (inclusive; ``-1`` when nothing was seeded), for every
        selection kind; None for layers without 2-D maps. Figures zoom to their fields.
    """

    images: Tensor
    channels: Tensor
    positions: Tensor | None
    values: Tensor
    layer: str
    selection: Selection
    policy: ReversePolicy
    extents: Tensor | None = None

    def _repr_png_(self) -> bytes | None:
        """Inline display in Jupyter: the contact sheet of the first image (None, and
        so the text repr, when no renderer is registered)."""
        return _png_renderer(self) if _png_renderer is not None else None
