"""Display-exact: a reduced-precision projection against its full-precision twin, as pictures.

A projection is looked at as an 8-bit image, so that is where a reduced-precision reverse
pass is judged: both projections are drawn by :func:`~deconvnet.figures.render.show` (the
``rgb`` view, each with its own scale: zero at grey, the largest ``|value|`` 127 levels
away), and the reduced one passes when its rendering has a PSNR of at least 40 dB against
the full-precision rendering and at least 99 % of its pixels (all three channels) within
±2 levels (:data:`deconvnet.engine.precision.DISPLAY_PSNR` and its siblings). The largest
difference relative to the largest value is reported beside. The tests and benchmarks run
this check on every projection; the engine, which cannot afford the twin, predicts it from
its rounding-error estimate (:func:`deconvnet.engine.precision.expected_display_exact`).

Both pictures are compared on the smallest box holding every non-zero value of either —
the unit's field, which is what a tile zoomed to it shows; the grey outside, equal in
both, would only flatter the PSNR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from deconvnet.engine.precision import DISPLAY_LEVELS, DISPLAY_PSNR, DISPLAY_SHARE
from deconvnet.errors import InputError
from deconvnet.figures.render import ArrayLike, show
from deconvnet.figures.style import MAX_LEVEL

_PICTURE_RANK = 3  # (C, H, W)


@dataclass(frozen=True)
class DisplayMatch:
    """How one reduced-precision projection's picture compares with full precision's.

    Attributes
    ----------
    psnr : of the 8-bit rendering (dB; ``inf`` when identical).
    within : share of pixels whose three channels are all within ±2 levels.
    identical : share of pixels with all three channels equal.
    max_relative_error : ``max |reduced − full| / max |full|`` on the values themselves.
    """

    psnr: float
    within: float
    identical: float
    max_relative_error: float

    @property
    def passed(self) -> bool:
        """At least 40 dB and 99 % of pixels within ±2 levels."""
        return self.psnr >= DISPLAY_PSNR and self.within >= DISPLAY_SHARE


def display_match(reduced: ArrayLike, full: ArrayLike) -> DisplayMatch:
    """Compare two ``(C, H, W)`` projections of one unit as their ``rgb`` pictures, on the
    box holding their non-zero values."""
    low, high = _values(reduced), _values(full)
    if low.shape != high.shape or low.ndim != _PICTURE_RANK:
        raise InputError(
            f"display_match needs equal (C, H, W) shapes, got {low.shape} and {high.shape}"
        )
    reached = (np.abs(low) + np.abs(high)).sum(axis=0) > 0
    if not reached.any():
        return DisplayMatch(psnr=math.inf, within=1.0, identical=1.0, max_relative_error=0.0)
    rows, cols = np.flatnonzero(reached.any(axis=1)), np.flatnonzero(reached.any(axis=0))
    box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    a = show(low[box]).astype(np.int16)
    b = show(high[box]).astype(np.int16)
    levels = np.abs(a - b).max(axis=2)
    mean_square = float(np.mean((a - b).astype(np.float64) ** 2))
    psnr = math.inf if mean_square == 0 else 10 * math.log10(MAX_LEVEL**2 / mean_square)
    peak = float(np.abs(high).max())
    difference = float(np.abs(low - high).max())
    relative = difference / peak if peak > 0 else (0.0 if difference == 0 else math.inf)
    return DisplayMatch(
        psnr=psnr,
        within=float(np.mean(levels <= DISPLAY_LEVELS)),
        identical=float(np.mean(levels == 0)),
        max_relative_error=relative,
    )


def display_matches(reduced: torch.Tensor, full: torch.Tensor) -> list[DisplayMatch]:
    """:func:`display_match` for every projection of two ``(…, C, H, W)`` batches."""
    if reduced.shape != full.shape or reduced.dim() < _PICTURE_RANK:
        raise InputError(
            f"display_matches needs equal (..., C, H, W) shapes, got {tuple(reduced.shape)} "
            f"and {tuple(full.shape)}"
        )
    flat_reduced = reduced.detach().reshape(-1, *reduced.shape[-3:])
    flat_full = full.detach().reshape(-1, *full.shape[-3:])
    return [display_match(a, b) for a, b in zip(flat_reduced, flat_full, strict=True)]


def _values(projection: ArrayLike) -> np.ndarray:
    if isinstance(projection, torch.Tensor):
        return projection.detach().double().cpu().numpy()
    return np.asarray(projection, dtype=np.float64)
