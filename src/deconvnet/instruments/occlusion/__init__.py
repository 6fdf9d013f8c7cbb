"""Occlusion sensitivity, the paper's Fig. 7: :func:`occlude` and what it returns.

:mod:`~deconvnet.instruments.occlusion.occlusion` slides the occluder and records the
panels; :mod:`~deconvnet.instruments.occlusion.splice` makes that fast by recomputing only
the part of an early layer an occluder can change.
"""

from deconvnet.instruments.occlusion.occlusion import (
    Occluder,
    OcclusionResult,
    fill_pixels,
    grey_fill,
    mean_fill,
    occlude,
)

__all__ = ["Occluder", "OcclusionResult", "fill_pixels", "grey_fill", "mean_fill", "occlude"]
