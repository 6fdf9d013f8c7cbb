"""Model source options shared by every sub-command: ``--model/--weights`` or ``--caffe``."""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from torch import nn

from deconvnet import caffe, models
from deconvnet.engine.engine import alias_of, resolve_layer
from deconvnet.errors import InputError
from deconvnet.faces.cli._bars import ProgressBar
from deconvnet.inputs.preprocessing import Preprocessing

DEFAULT_MODEL = "default"
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class LoadedModel:
    """A network with everything the faces need to describe it in a manifest."""

    model: nn.Module
    preprocessing: Preprocessing
    categories: tuple[str, ...] | None
    name: str
    weights: str
    weights_sha256: str | None
    layer_aliases: dict[str, str] = field(default_factory=dict)

    def layer(self, name: str | None) -> str:
        """A ``named_modules()`` name for ``name`` (alias or dotted); default: last conv."""
        if name is None:
            return self.default_layer()
        name = self.layer_aliases.get(name, name)
        return resolve_layer(self.model, name)[0]

    def default_layer(self) -> str:
        """The last convolution: the deepest layer that still has feature maps."""
        convs: list[str] = [n for n, m in self.model.named_modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise InputError("the model has no Conv2d layer; name one with --layer")
        return convs[-1]

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live (inputs are moved there)."""
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def provenance(self) -> dict[str, str | None]:
        """The manifest fields that say which network made a picture."""
        return {
            "model": self.name,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
        }

    def display_name(self, layer: str) -> str:
        """The alias of ``layer`` if it has one (``conv5``), else the dotted name."""
        return alias_of(self.layer_aliases, layer) or layer


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--weights``, ``--caffe``, ``--device``."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        choices=models.names(),
        default=None,
        help=f"a zoo model (default: {DEFAULT_MODEL!r}, the embedded CIFAR-10 network)",
    )
    group.add_argument(
        "--weights",
        default=None,
        help="a .pth/.safetensors file or a named set such as 'imagenet' (default: the "
        "model's own: embedded for 'default', random init otherwise)",
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


def load_model(args: argparse.Namespace) -> LoadedModel:
    """Build the model the options name, on ``args.device``, in eval mode."""
    device = _device(args.device)
    if args.caffe:
        if args.model or args.weights:
            raise InputError("give either --caffe or --model/--weights, not both")
        if len(args.caffe) > 2:
            raise InputError("--caffe takes PROTOTXT and optionally CAFFEMODEL")
        prototxt = Path(args.caffe[0])
        weights_file = Path(args.caffe[1]) if len(args.caffe) == 2 else None
        net, preprocessing = caffe.load(prototxt, weights_file, device=device)
        return LoadedModel(
            model=net,
            preprocessing=preprocessing,
            categories=None,
            name=f"caffe:{prototxt.name}",
            weights=str(weights_file) if weights_file else "random",
            weights_sha256=_sha256(weights_file) if weights_file else None,
        )
    name = args.model or DEFAULT_MODEL
    with ProgressBar(f"downloading {name} weights", unit="B") as bar:
        model = models.load(name, args.weights, progress=bar, device=device)
    weights_path = Path(args.weights) if args.weights and Path(args.weights).is_file() else None
    return LoadedModel(
        model=model,
        preprocessing=cast(Preprocessing, model.preprocessing),
        categories=cast("tuple[str, ...] | None", model.categories),
        name=name,
        weights=str(args.weights) if args.weights else "default",
        weights_sha256=_sha256(weights_path) if weights_path else _set_sha(name, args.weights),
        layer_aliases=dict(cast("dict[str, str]", model.layer_aliases)),
    )


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _set_sha(name: str, weights_name: str | None) -> str | None:
    """The digest of the named (or default) weight set; ``None`` for random init."""
    spec = models.info(name)
    chosen = weights_name or spec.default_weights
    if chosen is None or chosen == models._api.RANDOM_INIT:
        return None
    weights = spec.weight_set(chosen)
    if weights.embedded:
        path = models._api.EMBEDDED_DIR / weights.file_name
        return _sha256(path) if path.is_file() else None
    return weights.sha256
