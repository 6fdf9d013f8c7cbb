"""Presets that reproduce other tools exactly, so their users can compare.

``caffe-deconvnet`` is the old Caffe demo (PoolingSwitches / SliceHalf / InvPooling layers
and a hand-written inverse prototxt). It departs from the paper in four ways, each kept
here on purpose: no rectification on the way down, LRN re-applied to the signal,
overwrite-on-collision unpooling, and every pool5 activation >= 150 projected jointly after
an accidental in-place rescale of the blob to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deconvnet.engine.selection import Threshold
from deconvnet.inputs.preprocessing import Preprocessing

MAX_8BIT = 255.0


@dataclass(frozen=True)
class CompatPreset:
    """Engine options, default layer and selection of another tool."""

    name: str
    rule: str
    lrn: str
    collisions: str
    layer: str
    threshold: float
    rescale_seed: bool
    description: str

    def selection(self, rescale: bool | None = None) -> Threshold:
        """The preset's joint threshold selection (``rescale`` overrides the default)."""
        return Threshold(self.threshold, rescale=self.rescale_seed if rescale is None else rescale)


CAFFE_DECONVNET = CompatPreset(
    name="caffe-deconvnet",
    rule="none",
    lrn="reapply",
    collisions="overwrite",
    layer="pool5",
    threshold=150.0,
    rescale_seed=True,
    description=(
        "the old caffe-deconvnet demo: pool5 >= 150 jointly, rescaled to [0, 1], no ReLU on "
        "the way down, LRN re-applied, overwrite unpooling, zero-bias deconvolutions"
    ),
)

PRESETS: dict[str, CompatPreset] = {CAFFE_DECONVNET.name: CAFFE_DECONVNET}


def preset(name: str) -> CompatPreset:
    """The preset called ``name``; ``ValueError`` listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"compat={name!r} is not one of {', '.join(PRESETS)}") from None


def demo_display(projection: torch.Tensor, preprocessing: Preprocessing) -> np.ndarray:
    """The old demo's final picture, as floats before matplotlib clips them to [0, 1].

    Min–max of the whole (3, H, W) projection to 0..255, then Caffe's
    ``Transformer.deprocess``: add the mean pixel, divide by the raw scale, HWC, BGR to RGB.
    """
    values = projection.detach().cpu().double()
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low) * MAX_8BIT if high > low else values * 0
    mean = torch.tensor(preprocessing.mean, dtype=torch.float64).view(-1, 1, 1)
    restored = (scaled + mean) / preprocessing.scale
    if preprocessing.channel_order == "BGR":
        restored = restored.flip(0)
    return restored.permute(1, 2, 0).numpy()
