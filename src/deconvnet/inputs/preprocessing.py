"""How a model wants its pixels: the one spec every model carries.

Kept apart from decoding (``images.py``) so models and the Caffe importer can declare it
without importing Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ResizeRule = Literal["exact", "shorter_then_center_crop", "squash_then_center_crop", "none"]
RESIZE_RULES: tuple[ResizeRule, ...] = (
    "exact", "shorter_then_center_crop", "squash_then_center_crop", "none"
)
CROPPING_RULES: tuple[ResizeRule, ...] = ("shorter_then_center_crop", "squash_then_center_crop")
"""The rules that resize to ``resize_to`` first, then centre-crop ``input_size``."""
Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]
INTERPOLATIONS: tuple[Interpolation, ...] = (
    "nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"
)
"""Pillow's resampling filters, by the names torchvision's ``InterpolationMode`` and timm's
``pretrained_cfg`` give them."""


@dataclass(frozen=True)
class Preprocessing:
    """Input convention of a network.

    Pixels are first decoded to RGB floats in [0, 1], then resized by ``resize_rule``,
    made grey for 1-channel nets, multiplied by ``scale``, put in ``channel_order``, and
    normalised as ``(x - mean_image - mean) / std`` per channel (``mean``/``std`` in the
    network's channel order and scale).

    Parameters
    ----------
    input_size
        ``(H, W)`` the network was trained on.
    resize_rule
        ``"exact"``: resize straight to ``input_size`` (Caffe demos);
        ``"shorter_then_center_crop"``: shorter side to ``resize_to``, centre crop to
        ``input_size`` (torchvision; timm's ``crop_mode="center"``);
        ``"squash_then_center_crop"``: both sides to ``resize_to`` (the aspect ratio is not
        kept), centre crop to ``input_size`` (timm's ``crop_mode="squash"``); ``"none"``:
        feed the image as it is (fully convolutional use).
    resize_to
        The side length the image is resized to before the crop, for the cropping rules.
    channel_order
        ``"RGB"`` or ``"BGR"`` (Caffe).
    scale
        ``1.0`` keeps [0, 1]; Caffe models use ``255.0``.
    mean, std
        Per channel, after scaling and reordering (one value each for 1-channel nets).
    channels
        3 (colour) or 1 (grey: ITU-R 601 luma of the RGB image, as Pillow's ``"L"``).
    mean_image
        ``(C, H, W)`` array subtracted before ``mean`` (Caffe's ``mean_file``), in the
        network's channel order and scale; centre-cropped to the input when larger, as
        Caffe does at test time.
    mean_source
        Where ``mean_image`` came from (a file name), for manifests.
    interpolation
        The resampling filter of every resize (Pillow's, on the 8-bit image): ``"bilinear"``
        as torchvision's ImageNet weights; timm's configs mostly say ``"bicubic"``.
    """

    input_size: tuple[int, int]
    resize_rule: ResizeRule = "exact"
    resize_to: int | None = None
    channel_order: Literal["RGB", "BGR"] = "RGB"
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channels: int = 3
    mean_image: np.ndarray | None = field(default=None, compare=False, repr=False)
    mean_source: str | None = None
    interpolation: Interpolation = "bilinear"

    def __post_init__(self) -> None:
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"input_size must be (H, W) >= 1, got {self.input_size!r}")
        if self.resize_rule not in RESIZE_RULES:
            raise ValueError(f"unknown resize_rule {self.resize_rule!r}")
        if self.resize_rule in CROPPING_RULES and not self.resize_to:
            raise ValueError(f"resize_rule {self.resize_rule!r} needs resize_to")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                f"got {self.interpolation!r}"
            )
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        for name, neutral in (("mean", 0.0), ("std", 1.0)):  # the defaults fit any count
            if getattr(self, name) == (neutral,) * 3:
                object.__setattr__(self, name, (neutral,) * self.channels)
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean and std need {self.channels} value(s) each, got {self.mean!r}, {self.std!r}"
            )
        if min(self.std) <= 0:
            raise ValueError(f"std must be > 0, got {self.std!r}")
        if self.mean_image is not None and (
            self.mean_image.ndim != 3 or self.mean_image.shape[0] != self.channels
        ):
            raise ValueError(
                f"mean_image must be ({self.channels}, H, W), got {self.mean_image.shape}"
            )

    def record(self) -> dict[str, object]:
        """The fields for a manifest: ``mean_image`` as its shape and source, not its values."""
        fields = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("mean_image", "mean_source")
        }
        if self.mean_image is not None:
            fields["mean_image"] = {
                "shape": list(self.mean_image.shape),
                "source": self.mean_source,
            }
        return fields


IMAGENET_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
"""Mean pixel of Caffe's ``ilsvrc_2012_mean.npy`` (mean over H and W), B, G, R, 0..255."""

IMAGENET_TORCHVISION = Preprocessing(
    input_size=(224, 224),
    resize_rule="shorter_then_center_crop",
    resize_to=256,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)
"""torchvision's ImageNet convention (RGB, [0, 1], mean/std)."""

CAFFE_IMAGENET = Preprocessing(
    input_size=(227, 227), channel_order="BGR", scale=255.0, mean=IMAGENET_MEAN_BGR
)
"""BVLC Caffe's ImageNet convention: B, G, R on 0..255 minus the mean pixel."""

CIFAR10_MEAN_RGB = (125.3, 123.0, 113.9)
"""Mean pixel of the CIFAR-10 training set, R, G, B, 0..255."""

PRESETS: dict[str, Preprocessing] = {
    "torchvision": IMAGENET_TORCHVISION,
    "caffe-imagenet": CAFFE_IMAGENET,
    "caffe-cifar10": Preprocessing(input_size=(32, 32), scale=255.0, mean=CIFAR10_MEAN_RGB),
    "caffe-lenet": Preprocessing(input_size=(28, 28), scale=255.0 / 256.0, channels=1),
    "unit": Preprocessing(input_size=(224, 224)),
}
"""Named conventions for ``--preprocess``; their sizes give way to the model's own.

``caffe-cifar10`` is Caffe's CIFAR-10 example with the mean pixel instead of its mean
image (give ``--mean-file`` for the image); ``caffe-lenet`` is LeNet's grey ``x / 256``;
``unit`` is RGB in [0, 1], nothing subtracted."""
