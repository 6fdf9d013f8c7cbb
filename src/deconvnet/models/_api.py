"""The zoo's registry: declarative weight sets, ``register``, ``names``, ``info``, ``load``.

Every model that :func:`load` returns carries its :class:`~deconvnet.models.card.ModelCard`
(preprocessing, categories, layer aliases, provenance), which the library reads, and, for
convenience, three plain attributes copied from it:

``model.preprocessing``  the :class:`~deconvnet.inputs.preprocessing.Preprocessing` of its weights;
``model.categories``     class names in output order, or ``None`` (random init);
``model.layer_aliases``  readable layer names mapped to ``named_modules()`` names
                         (e.g. ``{"conv5": "features.12"}``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from deconvnet.errors import ModelNotFoundError, WeightsError
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.models import libraries
from deconvnet.models._download import ProgressFn, check_sha256, fetch, sha256_of
from deconvnet.models.card import ModelCard, Provenance, attach
from deconvnet.models.state_dicts import (
    RANDOM_INIT,
    SAFETENSORS_SUFFIX,
    STATE_DICT_SUFFIXES,
    apply_state_dict,
    archive_budget,
    read_state_dict,
)

EMBEDDED_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = "default"
"""The provenance of a model loaded without naming its weights (its default set, if any)."""


@dataclass(frozen=True)
class Weights:
    """One named set of trained weights.

    Parameters
    ----------
    name
        Short id used in ``load(model, weights=name)``, e.g. ``"imagenet"``.
    url
        Where to fetch it; ``None`` for weights shipped inside the package.
    sha256
        Full hex digest, or the prefix torchvision puts in its file names (checked as a
        prefix); ``None`` when unknown.
    file_name
        Name in the hub cache (or in ``models/weights/`` when embedded).
    preprocessing
        Input convention the weights were trained with.
    categories
        Class names in output order, or ``None``.
    provenance
        Who trained them, how, where they come from.
    licence
        Terms the weights are distributed under (an SPDX id where one fits), shown by
        ``deconvnet models``.
    num_params
        Parameter count of the architecture these weights fill.
    builder_kwargs
        Extra arguments for the model's builder, for weights trained on a variant of the
        architecture (e.g. Caffe's SqueezeNet pads its final conv); state-dict keys stay
        those of the plain architecture.
    """

    name: str
    url: str | None
    sha256: str | None
    file_name: str
    preprocessing: Preprocessing
    categories: tuple[str, ...] | None
    provenance: str
    licence: str
    num_params: int
    builder_kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def embedded(self) -> bool:
        """True for weights shipped in the package (no download)."""
        return self.url is None


ModelT = TypeVar("ModelT", bound=nn.Module)
Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """What the zoo knows about one architecture, available without building it.

    ``builder(num_classes=...)`` returns a randomly initialised module; ``weights`` are
    the named sets; ``default_weights`` names the set that ``load(name)`` uses when no
    weights are given (``None``: random init); ``preprocessing`` is the input convention
    the architecture was designed for and ``categories`` its output classes, both used for
    weights read from a file (a random-init model gets ``categories=None``).
    """

    name: str
    builder: Builder
    num_classes: int
    preprocessing: Preprocessing
    layer_aliases: Mapping[str, str]
    weights: tuple[Weights, ...] = ()
    default_weights: str | None = None
    summary: str = ""
    categories: tuple[str, ...] | None = field(default=None)

    def weight_set(self, name: str) -> Weights:
        """The named weight set, or :class:`WeightsError` listing the known ones."""
        for candidate in self.weights:
            if candidate.name == name:
                return candidate
        known = ", ".join(w.name for w in self.weights) or "none"
        raise WeightsError(
            f"model {self.name!r} has no weight set {name!r} (named sets: {known}); "
            f"a file must end in {', '.join((*STATE_DICT_SUFFIXES, SAFETENSORS_SUFFIX))}"
        )


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str,
    *,
    num_classes: int,
    preprocessing: Preprocessing,
    layer_aliases: Mapping[str, str],
    weights: tuple[Weights, ...] = (),
    default_weights: str | None = None,
    categories: tuple[str, ...] | None = None,
) -> Callable[[Callable[..., ModelT]], Callable[..., ModelT]]:
    """Decorator adding a builder to the zoo under ``name``; a duplicate name is an error."""

    def wrap(builder: Callable[..., ModelT]) -> Callable[..., ModelT]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        doc = (builder.__doc__ or "").strip()
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            num_classes=num_classes,
            preprocessing=preprocessing,
            layer_aliases=dict(layer_aliases),
            weights=weights,
            default_weights=default_weights,
            categories=categories,
            summary=doc.splitlines()[0] if doc else "",
        )
        return builder

    return wrap


def names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def info(name: str) -> ModelSpec:
    """The spec of model ``name`` (weights, preprocessing, aliases) without building it."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model {name!r}; known models: {', '.join(names())}"
        ) from None


def load(
    name: str,
    weights: str | os.PathLike[str] | Weights | None = None,
    *,
    progress: ProgressFn | None = None,
    device: torch.device | str | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Build model ``name`` and fill it with weights, in eval mode.

    Parameters
    ----------
    name
        One of :func:`names`, or ``timm:NAME`` / ``torchvision:NAME`` when that library is
        installed (:mod:`~deconvnet.models.libraries`: its preprocessing and class names
        on the card; weights ``None``/``"random"``, ``"pretrained"`` or a file).
    weights
        ``None``: the model's default set (the embedded CIFAR-10 weights for
        ``"default"``), otherwise random init; ``"random"``: random init always (e.g. for
        model-randomisation sanity checks); a weight-set name such as ``"imagenet"``
        (downloaded once into ``torch.hub.get_dir()/checkpoints``); a path to a
        ``.pth``/``.pt`` state dict or a ``.safetensors`` file; or a :class:`Weights`.
    progress
        ``progress(bytes_done, bytes_total_or_None)`` during a download.
    device
        Where to put the returned model (default CPU).
    seed
        Makes random init reproducible without touching the global RNG state.

    Returns
    -------
    nn.Module
        With its :class:`~deconvnet.models.card.ModelCard` attached (its provenance: ``name``,
        the weights as given — ``"default"`` when not — and their SHA-256) and the
        ``preprocessing``, ``categories`` and ``layer_aliases`` attributes set from it.

    Raises
    ------
    ModelNotFoundError
        ``name`` is not registered; its library is not installed or has no such model.
    WeightsError
        Unknown weight-set name, missing/corrupt file, failed download, or a state dict
        that does not fit the architecture.
    """
    if libraries.is_library_model(name):
        if isinstance(weights, Weights):
            raise WeightsError(f"{name}: weights must be a file, {libraries.PRETRAINED!r} or None")
        model, card = libraries.load_library_model(name, weights, progress=progress, seed=seed)
    else:
        model, card = _zoo_model(name, weights, progress, seed)
    _set_attributes(
        attach(model, card),
        preprocessing=card.preprocessing,
        categories=card.categories,
        layer_aliases=dict(card.aliases),
    )
    model.eval()
    if device is not None:
        model.to(device)
    return model


def _zoo_model(
    name: str,
    weights: str | os.PathLike[str] | Weights | None,
    progress: ProgressFn | None,
    seed: int | None,
) -> tuple[nn.Module, ModelCard]:
    """A zoo model with its weights, and its card."""
    spec = info(name)
    chosen = _resolve(spec, weights)
    digest = None
    if isinstance(chosen, Weights):
        num_classes = len(chosen.categories) if chosen.categories else spec.num_classes
        model = _build(spec, num_classes, seed, chosen.builder_kwargs)
        state, digest = _read_weight_set(chosen, progress, archive_budget(model))
        apply_state_dict(model, state, source=chosen.file_name)
        preprocessing, categories = chosen.preprocessing, chosen.categories
    else:
        model = _build(spec, spec.num_classes, seed, {})
        categories = None
        if chosen is not None:
            state = read_state_dict(chosen, max_bytes=archive_budget(model))
            apply_state_dict(model, state, source=str(chosen))
            categories, digest = spec.categories, sha256_of(chosen)
        preprocessing = spec.preprocessing
    card = ModelCard(
        preprocessing=preprocessing,
        categories=categories,
        aliases=dict(spec.layer_aliases),
        provenance=Provenance(name, _weights_label(weights), digest),
    )
    return model, card


def _weights_label(weights: str | os.PathLike[str] | Weights | None) -> str:
    """The weights as the caller gave them, for the provenance (``"default"`` for none)."""
    if weights is None:
        return DEFAULT_WEIGHTS
    return weights.name if isinstance(weights, Weights) else os.fspath(weights)


def _set_attributes(model: nn.Module, **attributes: object) -> None:
    """Plain attributes on ``model``, in order (``nn.Module``'s stub types only tensors)."""
    for attribute, value in attributes.items():
        setattr(model, attribute, value)


def _resolve(
    spec: ModelSpec, weights: str | os.PathLike[str] | Weights | None
) -> Weights | Path | None:
    """Turn the ``weights`` argument into a weight set, a file path, or ``None`` (random)."""
    if isinstance(weights, Weights):
        return weights
    if weights is None:
        return spec.weight_set(spec.default_weights) if spec.default_weights else None
    if not isinstance(weights, (str, os.PathLike)):
        raise WeightsError(
            f"weights must be None, a weight-set name, a file path or Weights, "
            f"got {type(weights).__name__}"
        )
    text = os.fspath(weights)
    if text == RANDOM_INIT:
        return None
    if any(text.endswith(suffix) for suffix in (*STATE_DICT_SUFFIXES, SAFETENSORS_SUFFIX)):
        return Path(text)
    return spec.weight_set(text)


def _build(
    spec: ModelSpec, num_classes: int, seed: int | None, builder_kwargs: Mapping[str, Any]
) -> nn.Module:
    """Call the builder, seeding a private RNG scope when ``seed`` is given."""
    if seed is None:
        return spec.builder(num_classes=num_classes, **builder_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.builder(num_classes=num_classes, **builder_kwargs)


def _read_weight_set(
    weights: Weights, progress: ProgressFn | None, max_bytes: int
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Load an embedded set from the package, or fetch a remote one into the hub cache; its
    tensors and its digest (the embedded file's own, a remote set's published one)."""
    if weights.url is None:
        path = EMBEDDED_DIR / weights.file_name
        if not path.is_file():
            raise WeightsError(f"embedded weights {path} are missing; reinstall deconvnet")
        digest: str | None = sha256_of(path)
        check_sha256(path, weights.sha256, digest)
    else:
        path = fetch(weights.url, weights.file_name, weights.sha256, progress=progress)
        digest = weights.sha256
    return read_state_dict(path, max_bytes=max_bytes), digest
