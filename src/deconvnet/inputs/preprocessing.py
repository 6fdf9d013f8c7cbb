"""How a model wants its pixels: the one spec every model carries.

Kept apart from decoding (``images.py``) so models and the Caffe importer can declare it
without importing Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ResizeRule = Literal["exact", "shorter_then_center_crop", "none"]


@dataclass(frozen=True)
class Preprocessing:
    """Input convention of a network.

    Pixels are first decoded to RGB floats in [0, 1], then resized by ``resize_rule``,
    multiplied by ``scale``, put in ``channel_order``, and normalised as
    ``(x - mean) / std`` per channel (``mean``/``std`` in the network's channel order and
    scale).

    Parameters
    ----------
    input_size
        ``(H, W)`` the network was trained on.
    resize_rule
        ``"exact"``: resize straight to ``input_size`` (Caffe demos);
        ``"shorter_then_center_crop"``: shorter side to ``resize_to``, centre crop to
        ``input_size`` (torchvision); ``"none"``: feed the image as it is (fully
        convolutional use).
    resize_to
        Shorter-side length for ``"shorter_then_center_crop"``.
    channel_order
        ``"RGB"`` or ``"BGR"`` (Caffe).
    scale
        ``1.0`` keeps [0, 1]; Caffe models use ``255.0``.
    mean, std
        Per channel, after scaling and reordering.
    """

    input_size: tuple[int, int]
    resize_rule: ResizeRule = "exact"
    resize_to: int | None = None
    channel_order: Literal["RGB", "BGR"] = "RGB"
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"input_size must be (H, W) >= 1, got {self.input_size!r}")
        if self.resize_rule not in ("exact", "shorter_then_center_crop", "none"):
            raise ValueError(f"unknown resize_rule {self.resize_rule!r}")
        if self.resize_rule == "shorter_then_center_crop" and not self.resize_to:
            raise ValueError("resize_rule 'shorter_then_center_crop' needs resize_to")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each, std > 0")


IMAGENET_TORCHVISION = Preprocessing(
    input_size=(224, 224),
    resize_rule="shorter_then_center_crop",
    resize_to=256,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)
"""torchvision's ImageNet convention (RGB, [0, 1], mean/std)."""
