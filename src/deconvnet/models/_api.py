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
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from torch import nn

from deconvnet.errors import ModelNotFoundError, WeightsError, one_line
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.models import codebook
from deconvnet.models._download import ProgressFn, check_sha256, fetch, sha256_of
from deconvnet.models.card import ModelCard, Provenance, attach

EMBEDDED_DIR = Path(__file__).resolve().parent / "weights"
STATE_DICT_SUFFIXES = (".pth", ".pt")
SAFETENSORS_SUFFIX = ".safetensors"
RANDOM_INIT = "random"
"""Reserved weights name: random init even where a default weight set exists."""
DEFAULT_WEIGHTS = "default"
"""The provenance of a model loaded without naming its weights (its default set, if any)."""
KEYS_SHOWN = 3
"""How many missing/unexpected keys a mismatch message lists before '...'."""
MAX_ARCHIVE_BYTES = 8 << 30
"""Most bytes a ``.pth`` zip may unpack to when no model bounds it (VGG-16 is 0.55 GB)."""
ARCHIVE_FACTOR, ARCHIVE_SLACK = 4, 16 << 20
"""A file for a model may unpack to 4x its weights' bytes + 16 MiB (room for an optimiser's
state and the pickle); a zip bomb claims far more and is refused before it is read."""


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
    from deconvnet.models import libraries  # it builds on this module's weights checks

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


def archive_budget(model: nn.Module) -> int:
    """Most bytes a weights file for ``model`` may unpack to (see :data:`ARCHIVE_FACTOR`)."""
    size = sum(int(t.numel() * t.element_size()) for t in model.state_dict().values())
    return ARCHIVE_FACTOR * size + ARCHIVE_SLACK


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


def read_state_dict(path: Path, *, max_bytes: int = MAX_ARCHIVE_BYTES) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.pt`` (``weights_only=True``) or ``.safetensors`` file of tensors.

    A checkpoint that wraps its tensors as ``{"state_dict": {...}}`` is unwrapped; a
    safetensors file in the :mod:`~deconvnet.models.codebook` form is decoded. A ``.pth``
    must be torch's zip format (``torch.save`` since 1.6) whose members unpack to at most
    ``max_bytes``, checked from the zip's directory before ``torch.load`` allocates anything;
    the old pickle-only format declares storage sizes that are only found out by reading.
    """
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix == SAFETENSORS_SUFFIX:  # sizes are bounded by the file's own length
        return _read_safetensors(path)
    check_archive(path, max_bytes)
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors have no common base class
        raise WeightsError(
            f"cannot read {path} as a weights_only state dict: {one_line(exc, 300)}"
        ) from exc
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in loaded.values()
    ):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(loaded)


def check_archive(path: Path, max_bytes: int) -> None:
    """Refuse a ``.pth`` that is not a zip archive or would unpack to over ``max_bytes``."""
    reading = f"cannot read {path} as a weights_only state dict"
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise WeightsError(
            f"{reading}: not a zip archive (torch.save's format since 1.6; re-save old files "
            f"with torch.save): {one_line(exc)}"
        ) from exc
    if unpacked > max_bytes:
        raise WeightsError(
            f"{reading}: it would unpack to {unpacked} bytes, over the {max_bytes} allowed "
            f"({path.stat().st_size} bytes on disk: a zip bomb?); refusing to load it"
        )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, decoded when its metadata names an encoding."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            stored = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # the library raises its own error types
        raise WeightsError(f"cannot read {path} as safetensors: {exc}") from exc
    encoding = metadata.get(codebook.ENCODING_KEY)
    if encoding is None:
        return stored
    if encoding != codebook.ENCODING:
        raise WeightsError(
            f"{path} is stored as {encoding!r}; this deconvnet reads only {codebook.ENCODING!r}"
        )
    return codebook.decode(stored, source=str(path))


def apply_state_dict(model: nn.Module, state: Mapping[Any, Any], *, source: str) -> None:
    """Copy ``state`` into ``model``; on any mismatch raise one clear error, load nothing.

    Checked before ``load_state_dict`` sees anything: keys (missing, unexpected, not a
    string), shapes, and every tensor's kind: meta, sparse, quantized and complex tensors
    are refused, as is a dtype ``load_state_dict`` would cast silently between kinds (bool
    or integer values into float weights, floats into integer buffers), and NaN/Inf values.

    Raises
    ------
    WeightsError
        Listing the first few of each kind of problem, on one line.
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [_key(key) for key in state if key not in expected]
    shapes = []
    tensors = []
    for key, target in expected.items():
        if key not in state:
            continue
        value = state[key]
        reason = _unusable(value, target)
        if reason is not None:
            tensors.append(f"{key} {reason}")
        elif value.shape != target.shape:
            shapes.append(f"{key} {tuple(value.shape)} vs model {tuple(target.shape)}")
    problems = []
    if missing:
        problems.append(f"missing keys {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_first(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_first(shapes)}")
    if tensors:
        problems.append(f"unusable tensors {_first(tensors)}")
    if problems:
        raise WeightsError(f"{source} does not fit {type(model).__name__}: {'; '.join(problems)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # a case the checks above do not know
        raise WeightsError(
            f"{source} does not fit {type(model).__name__}: {one_line(exc)}"
        ) from exc


def _key(key: object) -> str:
    """A state-dict key for a message: strings as they are, anything else as its repr."""
    return key if isinstance(key, str) else f"{key!r} (a {type(key).__name__}, not a name)"


def _unusable(value: object, target: torch.Tensor) -> str | None:
    """Why ``value`` cannot be copied into ``target`` as it is, or ``None``."""
    if not isinstance(value, torch.Tensor):
        return f"is a {type(value).__name__}, not a tensor"
    if value.is_meta:
        return "is a meta tensor (it has no values)"
    if value.layout != torch.strided:
        return f"is {str(value.layout).removeprefix('torch.')} (sparse), not dense"
    if value.is_quantized:
        return "is quantized"
    if value.is_complex():
        return f"is complex ({value.dtype})"
    if _kind(value.dtype) != _kind(target.dtype):
        return f"is {value.dtype}, the model holds {target.dtype} (no silent cast)"
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        return "holds NaN or infinite values"
    return None


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    return "float" if dtype.is_floating_point else "integer"


def _first(items: list[str]) -> str:
    """``[a, b, c, ... (+n more)]`` for error messages that stay on one line."""
    shown = ", ".join(items[:KEYS_SHOWN])
    rest = len(items) - KEYS_SHOWN
    return f"[{shown}{f', ... (+{rest} more)' if rest > 0 else ''}]"
