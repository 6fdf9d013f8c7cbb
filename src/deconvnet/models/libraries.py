"""Models by name from the libraries people train them with: ``timm:NAME`` and
``torchvision:NAME``, when that library is installed.

The library builds the architecture (random init) and says how it wants its pixels: timm's
``pretrained_cfg`` (input size, mean, std, interpolation, crop percentage and mode) and
torchvision's weights transforms (resize, crop, mean, std, interpolation) become the model
card's :class:`~deconvnet.inputs.preprocessing.Preprocessing`; its class names become the
card's categories when the weights are trained ones.

Weights are checked like every weights file of this package (keys, shapes, dtypes;
``weights_only=True`` or safetensors): ``weights=FILE`` reads a state dict, and
``weights="pretrained"`` fetches the file the library publishes for that name — timm's
Hugging Face Hub file (``HF_ENDPOINT`` is honoured, as ``huggingface_hub`` does) or its
release URL, torchvision's ``download.pytorch.org`` file with the SHA-256 prefix in its
name — once into torch's hub cache, through the same download as the zoo's weight sets, so
offline the one-line error names the URL and the file to save. torchvision's own weight
names (``IMAGENET1K_V2``) work too; timm's tags go in the model name
(``timm:resnet50.a1_in1k``).
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from deconvnet.errors import ModelNotFoundError, WeightsError, one_line
from deconvnet.inputs.preprocessing import (
    INTERPOLATIONS,
    Interpolation,
    Preprocessing,
    ResizeRule,
)
from deconvnet.models._download import MIN_SHA_PREFIX, ProgressFn, fetch, sha256_of
from deconvnet.models.card import ModelCard, Provenance
from deconvnet.models.state_dicts import (
    RANDOM_INIT,
    SAFETENSORS_SUFFIX,
    STATE_DICT_SUFFIXES,
    apply_state_dict,
    archive_budget,
    read_state_dict,
)

SEPARATOR = ":"
PRETRAINED = "pretrained"
"""The weights name that fetches the library's own trained weights for the model."""
HF_ENDPOINT_VARIABLE = "HF_ENDPOINT"
HF_ENDPOINT = "https://huggingface.co"
HF_WEIGHTS_FILE = "model.safetensors"
"""What timm's Hub repositories hold (timm converted every one of them to safetensors)."""
DEFAULT_CROP_PCT = 0.875
"""timm's ``DEFAULT_CROP_PCT``, used when a config leaves ``crop_pct`` out."""
TIMM_CROP_MODES: dict[str, ResizeRule] = {
    "center": "shorter_then_center_crop",
    "squash": "squash_then_center_crop",
}
CLOSE_NAMES = 3
"""How many similar names an unknown model's message suggests."""
ERROR_CHARS = 300


@dataclass(frozen=True)
class Source:
    """Where a library publishes a weight set: the URL, the name it gets in torch's hub
    cache, and the SHA-256 (or the prefix in torchvision's file names) when published."""

    url: str
    file_name: str
    sha256: str | None


@dataclass(frozen=True)
class Described:
    """What a library says about one of its architectures besides the module: how to feed
    it and its class names (for trained weights)."""

    preprocessing: Preprocessing
    categories: tuple[str, ...] | None


class Library(ABC):
    """One library's names, builder, configs and published weights."""

    name: str
    install: str
    """The ``pip install`` argument that brings it."""

    def imported(self) -> ModuleType:
        """The library's module, or one line saying it is not installed (or broken)."""
        try:
            return importlib.import_module(self.name)
        except ModuleNotFoundError as exc:
            if exc.name != self.name:
                raise ModelNotFoundError(
                    f"{self.name} is installed but cannot be imported: {one_line(exc, ERROR_CHARS)}"
                ) from exc
            raise ModelNotFoundError(
                f"{self.name}:NAME needs {self.name}, which is not installed here "
                f"(pip install {self.install})"
            ) from None
        except Exception as exc:  # a build for another torch fails with any error
            raise ModelNotFoundError(
                f"{self.name} is installed but cannot be imported beside torch "
                f"{torch.__version__}: {one_line(exc, ERROR_CHARS)}"
            ) from exc

    @abstractmethod
    def names(self, library: ModuleType) -> list[str]:
        """Every model name the library builds."""

    @abstractmethod
    def build(self, library: ModuleType, name: str) -> nn.Module:
        """The architecture, randomly initialised."""

    @abstractmethod
    def describe(self, library: ModuleType, model: nn.Module, name: str) -> Described:
        """The model's preprocessing and class names, from the library's own config."""

    @abstractmethod
    def source(self, library: ModuleType, model: nn.Module, name: str, weights: str) -> Source:
        """Where the library publishes the weight set ``weights`` of ``name``."""


class Timm(Library):
    """``timm.create_model``; ``pretrained_cfg`` for pixels and weights."""

    name = "timm"
    install = "timm"

    def names(self, library: ModuleType) -> list[str]:
        return list(library.list_models())

    def build(self, library: ModuleType, name: str) -> nn.Module:
        return library.create_model(name, pretrained=False)  # type: ignore[no-any-return]

    def describe(self, library: ModuleType, model: nn.Module, name: str) -> Described:
        config = library.data.resolve_model_data_config(model)
        return Described(timm_preprocessing(config, name), _timm_categories(library, model))

    def source(self, library: ModuleType, model: nn.Module, name: str, weights: str) -> Source:
        if weights != PRETRAINED:
            raise WeightsError(
                f"timm:{name} has no weight set {weights!r}: give {PRETRAINED!r}, "
                f"{RANDOM_INIT!r} or a state dict file; timm's tags go in the model name "
                "(timm:resnet50.a1_in1k)"
            )
        config: Mapping[str, Any] = getattr(model, "pretrained_cfg", None) or {}
        hub_id, url = config.get("hf_hub_id"), config.get("url")
        if hub_id:
            endpoint = os.environ.get(HF_ENDPOINT_VARIABLE, HF_ENDPOINT).rstrip("/")
            file_name = config.get("hf_hub_filename") or HF_WEIGHTS_FILE
            local = f"{hub_id.replace('/', '--')}--{file_name.replace('/', '--')}"
            return Source(f"{endpoint}/{hub_id}/resolve/main/{file_name}", local, None)
        if url:
            return Source(url, _url_file_name(url), _sha_prefix(url))
        raise WeightsError(f"timm publishes no pretrained weights for {name!r}")


class Torchvision(Library):
    """``torchvision.models.get_model``; the weights enum's transforms, categories and URL."""

    name = "torchvision"
    install = "torchvision"

    def names(self, library: ModuleType) -> list[str]:
        # the classification models: detection and segmentation ones take lists of images
        return list(library.models.list_models(module=library.models))

    def build(self, library: ModuleType, name: str) -> nn.Module:
        return library.models.get_model(name, weights=None)  # type: ignore[no-any-return]

    def describe(self, library: ModuleType, model: nn.Module, name: str) -> Described:
        weights = library.models.get_model_weights(name).DEFAULT
        transform = weights.transforms()
        crop, resize = int(transform.crop_size[0]), int(transform.resize_size[0])
        preprocessing = Preprocessing(
            input_size=(crop, crop),
            resize_rule="shorter_then_center_crop",
            resize_to=resize,
            mean=tuple(float(v) for v in transform.mean),
            std=tuple(float(v) for v in transform.std),
            interpolation=_interpolation(str(transform.interpolation.value), f"torchvision:{name}"),
        )
        categories = weights.meta.get("categories")
        return Described(preprocessing, tuple(categories) if categories else None)

    def source(self, library: ModuleType, model: nn.Module, name: str, weights: str) -> Source:
        sets = library.models.get_model_weights(name)
        if weights == PRETRAINED:
            chosen = sets.DEFAULT
        elif weights in sets.__members__:
            chosen = sets[weights]
        else:
            known = ", ".join([PRETRAINED, *sets.__members__])
            raise WeightsError(
                f"torchvision:{name} has no weight set {weights!r} (named sets: {known}); "
                f"a file must end in {', '.join((*STATE_DICT_SUFFIXES, SAFETENSORS_SUFFIX))}"
            )
        url = str(chosen.url)
        return Source(url, _url_file_name(url), _sha_prefix(url))


LIBRARIES: dict[str, Library] = {library.name: library for library in (Timm(), Torchvision())}
"""The libraries ``--model LIBRARY:NAME`` reads, by prefix."""


def is_library_model(spec: str) -> bool:
    """True for ``timm:NAME`` and ``torchvision:NAME``."""
    prefix, separator, name = spec.partition(SEPARATOR)
    return bool(separator) and prefix in LIBRARIES and bool(name)


def load_library_model(
    spec: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    progress: ProgressFn | None = None,
    seed: int | None = None,
) -> tuple[nn.Module, ModelCard]:
    """Build ``LIBRARY:NAME`` and fill it with ``weights``; the module (mode untouched) and
    its card.

    ``weights``: None or ``"random"``: random init (no categories); ``"pretrained"`` (or a
    torchvision weight name): the library's published file, fetched once into torch's hub
    cache; a ``.pth``/``.pt``/``.safetensors`` path: a state dict.

    Raises
    ------
    ModelNotFoundError
        The library is not installed or cannot be imported, or has no model ``NAME``.
    WeightsError
        An unknown weight set, a failed download (offline: one line naming the URL and the
        file to save), a file that cannot be read or does not fit.
    """
    prefix, _, name = spec.partition(SEPARATOR)
    library = LIBRARIES[prefix]
    module = library.imported()
    model = _built(library, module, name, seed)
    described = library.describe(module, model, name)
    label = RANDOM_INIT if weights is None else os.fspath(weights)
    if label == RANDOM_INIT:
        categories, digest = None, None
    else:
        if label.endswith((*STATE_DICT_SUFFIXES, SAFETENSORS_SUFFIX)):
            path, source = Path(label), label
        else:
            published = library.source(module, model, name, label)
            path = fetch(published.url, published.file_name, published.sha256, progress=progress)
            source = published.url
        state = read_state_dict(path, max_bytes=archive_budget(model))
        apply_state_dict(model, state, source=source)
        categories, digest = described.categories, sha256_of(path)
    card = ModelCard(
        preprocessing=described.preprocessing,
        categories=categories,
        provenance=Provenance(spec, label, digest),
    )
    return model, card


def _built(library: Library, module: ModuleType, name: str, seed: int | None) -> nn.Module:
    """The library's random-init module, or one line naming the model it does not know."""
    known = library.names(module)
    if name not in known and name.partition(".")[0] not in known:  # timm: NAME.TAG
        close = difflib.get_close_matches(name, known, n=CLOSE_NAMES)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelNotFoundError(
            f"{library.name} has no model {name!r} ({len(known)} models{hint})"
        )
    try:
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = library.build(module, name)
    except Exception as exc:  # the library's builders raise what they like
        raise ModelNotFoundError(
            f"{library.name} could not build {name!r}: {one_line(exc, ERROR_CHARS)}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelNotFoundError(f"{library.name} built a {type(model).__name__} for {name!r}")
    return model


def timm_preprocessing(config: Mapping[str, Any], name: str) -> Preprocessing:
    """timm's eval transform (``transforms_imagenet_eval``) as a Preprocessing: the side
    ``floor(size / crop_pct)``, then the centre crop of ``input_size``; ``crop_mode``
    ``"center"`` keeps the aspect ratio (shorter side), ``"squash"`` does not."""
    channels, height, width = (int(v) for v in config["input_size"])
    crop_pct = float(config.get("crop_pct") or DEFAULT_CROP_PCT)
    crop_mode = config.get("crop_mode") or "center"
    what = f"timm:{name}"
    if crop_mode not in TIMM_CROP_MODES or height != width:
        raise ModelNotFoundError(
            f"{what}: timm's eval transform (crop_mode {crop_mode!r}, input {height}x{width}) "
            "has no deconvnet equivalent; only square inputs with crop_mode 'center' or "
            "'squash' are read"
        )
    return Preprocessing(
        input_size=(height, width),
        resize_rule=TIMM_CROP_MODES[crop_mode],
        resize_to=math.floor(height / crop_pct),
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        channels=channels,
        interpolation=_interpolation(str(config.get("interpolation", "bilinear")), what),
    )


def _interpolation(value: str, what: str) -> Interpolation:
    for known in INTERPOLATIONS:
        if value == known:
            return known
    raise ModelNotFoundError(
        f"{what}: its interpolation {value!r} is not one of {', '.join(INTERPOLATIONS)}"
    )


def _timm_categories(library: ModuleType, model: nn.Module) -> tuple[str, ...] | None:
    """The config's label descriptions, or ImageNet's for the subset timm infers from the
    class count (its own guess: 1000 classes are ImageNet-1k); None when neither applies."""
    config: Mapping[str, Any] = getattr(model, "pretrained_cfg", None) or {}
    given = config.get("label_descriptions") or config.get("label_names")
    if given:
        return tuple(str(v) for v in given)
    subset = library.data.infer_imagenet_subset(model)
    if subset is None:
        return None
    return tuple(library.data.ImageNetInfo(subset).label_descriptions())


def _url_file_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _sha_prefix(url: str) -> str | None:
    """The digest prefix torchvision and timm put in their file names (``-f37072fd.pth``),
    as torch.hub reads it."""
    found = re.search(torch.hub.HASH_REGEX, _url_file_name(url))
    return found.group(1) if found and len(found.group(1)) >= MIN_SHA_PREFIX else None

