"""Model source options shared by every sub-command: ``--model/--weights`` or ``--caffe``,
and the preprocessing flags that fit any model to its pixels."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deconvnet import caffe, models
from deconvnet.engine.layers import resolve_call
from deconvnet.errors import InputError
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.faces.cli._numbers import MAX_SIDE, int_in, real_in, real_number
from deconvnet.inputs.preprocessing import (
    CROPPING_RULES,
    IMAGENET_TORCHVISION,
    PRESETS,
    Preprocessing,
)
from deconvnet.models import naming
from deconvnet.models.card import ModelCard, Provenance, card_of
from deconvnet.models.own import is_own_model, load_own

PREPROCESSING_FLAGS = (
    "preprocess",
    "input_size",
    "mean",
    "std",
    "scale",
    "bgr",
    "channels",
    "mean_file",
)
"""The ``args`` attributes that change the preprocessing (recorded in manifests)."""

DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class LoadedModel:
    """A network, its card, and the preprocessing the command line feeds it (the card's
    with the preprocessing flags applied)."""

    model: nn.Module
    card: ModelCard
    preprocessing: Preprocessing
    preprocessing_flags: dict[str, Any] = field(default_factory=dict)

    @property
    def categories(self) -> tuple[str, ...] | None:
        return self.card.categories

    @property
    def layer_aliases(self) -> Mapping[str, str]:
        return self.card.aliases

    @property
    def name(self) -> str:
        return self._provenance.model

    @property
    def weights_sha256(self) -> str | None:
        return self._provenance.weights_sha256

    @property
    def _provenance(self) -> Provenance:
        assert self.card.provenance is not None  # every loader of the command line sets it
        return self.card.provenance

    def layer(self, name: str | None) -> str:
        """A ``named_modules()`` name for ``name`` (alias or dotted, ``name#k`` for the k-th
        call of a reused module); default: :meth:`default_layer`."""
        if name is None:
            return self.default_layer()
        name = self.layer_aliases.get(name, name)
        resolved, _, call = resolve_call(self.model, name)
        return resolved if call is None else f"{resolved}#{call}"

    def layer_list(self, text: str) -> list[str]:
        """The comma-separated layers of ``--layers`` (aliases ok), resolved; one at least."""
        layers = [self.layer(name.strip()) for name in text.split(",") if name.strip()]
        if not layers:
            raise InputError("--layers needs at least one layer name")
        return layers

    def one_size_preprocessing(self) -> Preprocessing:
        """The preprocessing, resizing exactly to the input size where it would keep an
        image's own size, so every image comes out the same size."""
        spec = self.preprocessing
        if spec.resize_rule == "none":
            spec = dataclasses.replace(spec, resize_rule="exact")
        return spec

    def default_layer(self) -> str:
        """The last convolution, after its rectifier (:func:`naming.default_layer`)."""
        return naming.default_layer(self.model)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live (inputs are moved there)."""
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def provenance(self) -> dict[str, Any]:
        """The manifest fields that say which network made a picture, fed how."""
        return {
            "model": self._provenance.model,
            "weights": self._provenance.weights,
            "weights_sha256": self._provenance.weights_sha256,
            "preprocessing": self.preprocessing.record(),
            "preprocessing_flags": self.preprocessing_flags,
        }

    def display_name(self, layer: str) -> str:
        """The alias of ``layer`` if it has one (``conv5``), else the dotted name."""
        return naming.display_name(self.layer_aliases, layer)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--weights``, ``--caffe``, ``--device`` and the preprocessing flags."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help=f"a zoo model ({', '.join(models.names())}); timm:NAME or torchvision:NAME "
        "when that library is installed (its own preprocessing and class names); your own: "
        "FILE.py:FACTORY or package.module:FACTORY (imports it and calls FACTORY(): this "
        "runs your code), a torch.export archive MODEL.pt2 (its input size read from it), "
        "or a pickled model with --unsafe-pickle "
        f"(default: {DEFAULT_MODEL!r}, the embedded CIFAR-10 network)",
    )
    group.add_argument(
        "--unsafe-pickle",
        action="store_true",
        help="allow --model to be a torch.save(model) pickle; unpickling runs any code the "
        "file holds, so only for files you trust",
    )
    group.add_argument(
        "--weights",
        default=None,
        help="a .pth/.safetensors file or a named set such as 'imagenet'; 'pretrained' for "
        "a timm:/torchvision: model fetches the library's published weights once into "
        "torch's hub cache (default: the model's own: embedded for 'default', random init "
        "otherwise)",
    )
    group.add_argument(
        "--caffe",
        nargs="+",
        metavar=("PROTOTXT", "CAFFEMODEL"),
        default=None,
        help="a Caffe deploy.prototxt and optionally its .caffemodel, instead of --model "
        "(default: none, the zoo model)",
    )
    group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    add_preprocessing_arguments(parser)


MIN_SCALE, MAX_SCALE = 1e-6, 1e6
"""``--scale`` multiplies [0, 1] pixels: 255 for Caffe nets; zero or huge values are typos."""


def add_preprocessing_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that override the model's own preprocessing, field by field."""
    group = parser.add_argument_group(
        "preprocessing",
        "Pixels are read as RGB in [0, 1], resized, made grey for --channels 1, multiplied "
        "by --scale, reordered for --bgr, then (x - mean) / std. Each flag overrides one "
        "field of the model's own convention (zoo weights and Caffe prototxts carry one; "
        "your own models get torchvision's ImageNet convention unless they set "
        "model.preprocessing).",
    )
    group.add_argument(
        "--preprocess",
        choices=sorted(PRESETS),
        default=None,
        help="start from a named convention instead of the model's own (default: the model's)",
    )
    group.add_argument(
        "--input-size",
        type=int_in(1, MAX_SIDE),
        nargs="+",
        metavar="N",
        default=None,
        help="network input H W (or one N for N×N); default: the model's",
    )
    group.add_argument(
        "--mean",
        default=None,
        help="per-channel mean after --scale, comma-separated in the network's channel "
        "order, e.g. 104,117,123 for Caffe's B,G,R (default: the model's)",
    )
    group.add_argument(
        "--std", default=None, help="per-channel std, comma-separated (default: the model's)"
    )
    group.add_argument(
        "--scale",
        type=real_in(MIN_SCALE, MAX_SCALE),
        default=None,
        help="multiply [0, 1] pixels by this: 255 for Caffe nets (default: the model's)",
    )
    group.add_argument(
        "--bgr",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="feed channels as B,G,R (--no-bgr: R,G,B) (default: the model's)",
    )
    group.add_argument(
        "--channels",
        type=int_in(1, 3),
        choices=(1, 3),
        default=None,
        help="1: grey input (ITU-R 601 luma), 3: colour (default: the model's)",
    )
    group.add_argument(
        "--mean-file",
        type=Path,
        default=None,
        help="a Caffe mean.binaryproto (0..255 pixels, the network's channel order) "
        "subtracted before --mean; replaces the mean pixel unless --mean is given "
        "(default: none)",
    )


def load_model(args: argparse.Namespace) -> LoadedModel:
    """Build the model the options name, on ``args.device``, in eval mode, with its card."""
    device = _device(args.device)
    model: nn.Module
    if args.caffe:
        if args.model or args.weights:
            raise InputError("give either --caffe or --model/--weights, not both")
        if len(args.caffe) > 2:
            raise InputError("--caffe takes PROTOTXT and optionally CAFFEMODEL")
        weights_file = Path(args.caffe[1]) if len(args.caffe) == 2 else None
        model, _ = caffe.load(Path(args.caffe[0]), weights_file, device=device)
    elif args.model and is_own_model(args.model):
        # put in eval mode here because the command line owns this copy
        model = load_own(args.model, weights=args.weights, unsafe_pickle=args.unsafe_pickle)
        model.eval().to(device)
    elif args.unsafe_pickle:
        raise InputError("--unsafe-pickle is only for a pickled --model file")
    else:
        name = args.model or DEFAULT_MODEL
        with ProgressBar(f"downloading {name} weights", unit="B") as bar:
            model = models.load(name, args.weights, progress=bar, device=device)
    card = card_of(model)
    preprocessing = _override(card.preprocessing or _assumed(card), args)
    _check_input(card, preprocessing)
    return LoadedModel(
        model=model,
        card=card,
        preprocessing=preprocessing,
        preprocessing_flags=_flags(args),
    )


def _assumed(card: ModelCard) -> Preprocessing:
    """torchvision's ImageNet convention for a model that does not say, at the input size
    and channel count its card fixes (a ``.pt2`` export's); grey inputs get ImageNet's mean
    and std averaged over the channels."""
    spec = IMAGENET_TORCHVISION
    if card.fixed_size is not None:
        spec = dataclasses.replace(spec, **_sized(spec, list(card.fixed_size)))
    if card.input_shape is not None and len(card.input_shape) > 1 and card.input_shape[1] == 1:
        mean, std = sum(spec.mean) / len(spec.mean), sum(spec.std) / len(spec.std)
        spec = dataclasses.replace(spec, channels=1, mean=(mean,), std=(std,))
    return spec


def _check_input(card: ModelCard, preprocessing: Preprocessing) -> None:
    """Refuse, before any work, flags that feed a model another input size or channel count
    than the one its card fixes."""
    name = card.provenance.model if card.provenance else "the model"
    fixed = card.fixed_size
    if fixed is not None and preprocessing.input_size != fixed:
        height, width = preprocessing.input_size
        raise InputError(
            f"{name} takes only {fixed[0]}x{fixed[1]} inputs (fixed when it was exported), "
            f"not {height}x{width}: leave out --input-size or give {fixed[0]} {fixed[1]}"
        )
    channels = card.input_shape[1] if card.input_shape and len(card.input_shape) > 1 else None
    if channels is not None and preprocessing.channels != channels:
        raise InputError(
            f"{name} takes only {channels}-channel inputs (fixed when it was exported), not "
            f"{preprocessing.channels}: give --channels {channels}"
        )


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The preprocessing flags the user gave, as given (for the manifest)."""
    given = {name: getattr(args, name, None) for name in PREPROCESSING_FLAGS}
    return {
        name: str(value) if isinstance(value, Path) else value
        for name, value in given.items()
        if value is not None
    }


def _override(base: Preprocessing, args: argparse.Namespace) -> Preprocessing:
    """``base`` (or the ``--preprocess`` preset) with each given flag replacing its field."""
    spec = base
    if getattr(args, "preprocess", None):
        preset = PRESETS[args.preprocess]
        spec = dataclasses.replace(
            preset,
            input_size=base.input_size,
            resize_rule=base.resize_rule,
            resize_to=base.resize_to,
        )
    changes: dict[str, Any] = {}
    if getattr(args, "input_size", None):
        changes.update(_sized(spec, args.input_size))
    if getattr(args, "scale", None) is not None:
        changes["scale"] = args.scale
    if getattr(args, "bgr", None) is not None:
        changes["channel_order"] = "BGR" if args.bgr else "RGB"
    channels = getattr(args, "channels", None) or spec.channels
    changes["channels"] = channels
    mean_file = getattr(args, "mean_file", None)
    mean_text = getattr(args, "mean", None)
    if mean_text is not None:
        changes["mean"] = _values(mean_text, channels, "--mean")
    elif mean_file is not None:
        changes["mean"] = (0.0,) * channels
    else:
        changes["mean"] = _fit(spec.mean, channels, "--mean")
    std_text = getattr(args, "std", None)
    changes["std"] = (
        _values(std_text, channels, "--std")
        if std_text is not None
        else _fit(spec.std, channels, "--std")
    )
    if mean_file is not None:
        image = caffe.read_mean_file(mean_file)
        scale = changes.get("scale", spec.scale)
        changes["mean_image"] = image * (scale / 255.0)
        changes["mean_source"] = mean_file.name
    try:
        return dataclasses.replace(spec, **changes)
    except ValueError as exc:
        raise InputError(f"preprocessing flags: {exc}") from exc


def _sized(spec: Preprocessing, sizes: list[int]) -> dict[str, Any]:
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise InputError(f"--input-size takes N or H W (>= 1), got {sizes}")
    height, width = (sizes[0], sizes[0]) if len(sizes) == 1 else (sizes[0], sizes[1])
    changes: dict[str, Any] = {"input_size": (height, width)}
    if spec.resize_rule == "none":
        changes["resize_rule"] = "exact"
    elif spec.resize_rule in CROPPING_RULES and spec.resize_to:
        # a squashed image is a square that must hold the whole crop
        side = max if spec.resize_rule == "squash_then_center_crop" else min
        ratio = spec.resize_to / side(spec.input_size)
        changes["resize_to"] = round(side(height, width) * ratio)
    return changes


def _values(text: str, channels: int, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(real_number(v.strip()) for v in text.split(","))
    except ValueError:
        raise InputError(f"{flag} takes comma-separated numbers, got {text!r}") from None
    return _fit(values, channels, flag)


def _fit(values: tuple[float, ...], channels: int, flag: str) -> tuple[float, ...]:
    """One value per channel: a single or repeated value fits any channel count."""
    if len(values) == channels:
        return values
    if len(set(values)) == 1:
        return (values[0],) * channels
    raise InputError(f"{flag} needs {channels} value(s) for {channels} channel(s), got {values}")


def _device(text: str) -> torch.device:
    """``--device`` as a device this torch build and machine can run on: cpu, or cuda[:N].

    ``torch.device`` accepts any type it knows (``mps``, ``meta``, ``xpu`` …) whether or not
    this build has it; a model moved there would fail later with a traceback."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {text!r}; use cpu or cuda[:N]") from None
    if device.type == "cpu" and device.index in (None, 0):
        return device
    if device.type != "cuda":
        raise InputError(f"--device {text} is not supported; use cpu or cuda[:N]")
    if not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but CUDA is not available here")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise InputError(f"--device {text}: this machine has {count} CUDA device(s)")
    return device
