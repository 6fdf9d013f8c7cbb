"""Weights files: reading a ``.pth``/``.pt`` (``weights_only``, zip bombs refused) or a
``.safetensors`` file, and copying a state dict into a model only when every key, shape and
tensor kind fits. Shared by the zoo, the libraries' models and your own."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from deconvnet.errors import WeightsError, one_line
from deconvnet.models import codebook

STATE_DICT_SUFFIXES = (".pth", ".pt")
SAFETENSORS_SUFFIX = ".safetensors"
RANDOM_INIT = "random"
"""Reserved weights name: random init even where a default weight set exists."""
KEYS_SHOWN = 3
"""How many missing/unexpected keys a mismatch message lists before '...'."""
MAX_ARCHIVE_BYTES = 8 << 30
"""Most bytes a ``.pth`` zip may unpack to when no model bounds it (VGG-16 is 0.55 GB)."""
ARCHIVE_FACTOR, ARCHIVE_SLACK = 4, 16 << 20
"""A file for a model may unpack to 4x its weights' bytes + 16 MiB (room for an optimiser's
state and the pickle); a zip bomb claims far more and is refused before it is read."""


def archive_budget(model: nn.Module) -> int:
    """Most bytes a weights file for ``model`` may unpack to (see :data:`ARCHIVE_FACTOR`)."""
    size = sum(int(t.numel() * t.element_size()) for t in model.state_dict().values())
    return ARCHIVE_FACTOR * size + ARCHIVE_SLACK


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
