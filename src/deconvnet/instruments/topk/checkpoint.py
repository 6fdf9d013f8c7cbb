"""Top-k scan checkpoints: written atomically, signed with a checksum, refused unless sound.

File layout: one ASCII line ``deconvnet-topk-checkpoint/2 <sha256 hex>``, then the payload,
a ``torch.save`` of plain tensors, ints and strings (read back with ``weights_only=True``).
The checksum covers every payload byte, so a flipped, truncated or spliced file is refused
before it is unpickled. A payload that checks out is then validated field by field
against the scan being resumed (:func:`validate`): the scan's own header, the ``done``
counter within ``[0, images in the scan]`` and equal to images read plus skipped, and for
every layer tensors of the right dtypes and consistent shapes, tracked maps ascending,
per map exactly ``min(k, images read)`` filled slots, first and then empty ones, image ids
unique and among the images already done, values non-increasing with ties in image-id
order, and a content digest for every ranked image. Anything else raises
:class:`~deconvnet.errors.CheckpointError` with one line naming the field; a checkpoint is
never used in part.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from torch import Tensor

from deconvnet.errors import CheckpointError, InputError, one_line
from deconvnet.inputs.reading import read_regular_file
from deconvnet.instruments.topk.state import DIGEST_BYTES, EMPTY_ID, VALUE_DTYPE, TopKState
from deconvnet.storage.atomic import atomic_write

CHECKPOINT_FORMAT = "deconvnet-topk-checkpoint/2"
MAX_CHECKPOINT_BYTES = 1 << 30
"""Largest checkpoint read (1 GiB); a scan's state is O(k x maps x layers), far below."""
_HEX_DIGITS = 64
_SPATIAL = 2
_STATE_KEYS = ("k", "images_seen", "skipped", "layers", "digests", "content", "stats")
_LAYER_KEYS = ("channels", "values", "image_ids", "positions")
_STATS_KEYS = ("channels", "images", "maximum", "mean_sum", "fired")


def save(path: Path, header: Mapping[str, Any], state: TopKState, done: int) -> None:
    """Write the scan so far to ``path``, atomically, with its payload's checksum."""
    buffer = io.BytesIO()
    torch.save({**header, "done": done, "state": state.to_dict()}, buffer)
    payload = buffer.getvalue()
    first_line = f"{CHECKPOINT_FORMAT} {hashlib.sha256(payload).hexdigest()}\n".encode()
    atomic_write(path, lambda handle: (handle.write(first_line), handle.write(payload)))


def load(path: Path, header: Mapping[str, Any]) -> tuple[TopKState, int]:
    """The state and ``done`` counter of the checkpoint at ``path``, validated for ``header``.

    Raises
    ------
    CheckpointError
        Unreadable, not a checkpoint, a checksum mismatch, from another scan, or any field
        out of range or inconsistent (the message names it).
    """
    return validate(read_payload(path), header, path)


def read_payload(path: Path) -> object:
    """The unpickled payload of a checkpoint whose checksum matches (fields not yet checked).

    Raises
    ------
    CheckpointError
        Not a regular file, too large, not a checkpoint of this version, a checksum
        mismatch, or a payload ``torch.load(weights_only=True)`` refuses.
    """
    try:
        data = read_regular_file(path, MAX_CHECKPOINT_BYTES, what="checkpoint")
    except InputError as error:
        raise CheckpointError(str(error)) from error
    first_line, newline, payload = data.partition(b"\n")
    header = _header(first_line if newline else b"", path)
    if hashlib.sha256(payload).hexdigest() != header.sha256:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its checksum does not match its contents"
        )
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds on a malformed payload
        raise CheckpointError(f"cannot read checkpoint {path}: {one_line(error, 200)}") from error


class CheckpointHeader(BaseModel):
    """The first line of a checkpoint, ``<format> <sha256 of the payload, hex>``."""

    model_config = ConfigDict(strict=True, frozen=True)
    format: Literal["deconvnet-topk-checkpoint/2"]
    sha256: Annotated[str, StringConstraints(pattern=f"^[0-9a-f]{{{_HEX_DIGITS}}}$")]


def _header(line: bytes, path: Path) -> CheckpointHeader:
    """The first line validated by :class:`CheckpointHeader`, else one line saying why."""
    fields = line.split(b" ")
    reason: Exception
    try:
        if len(fields) != len(CheckpointHeader.model_fields):
            raise ValueError("not two fields")
        format_name, digest = (field.decode("ascii") for field in fields)
        return CheckpointHeader(format=format_name, sha256=digest)  # type: ignore[arg-type]
    except ValidationError as error:
        if error.errors()[0]["loc"] == ("sha256",):
            raise CheckpointError(
                f"checkpoint {path} is corrupt: its checksum is not {_HEX_DIGITS} hex digits"
            ) from error
        reason = error
    except ValueError as error:  # also UnicodeDecodeError
        reason = error
    raise CheckpointError(
        f"{path} is not a top-k scan checkpoint of this version ({CHECKPOINT_FORMAT})"
    ) from reason


def validate(payload: object, header: Mapping[str, Any], path: Path) -> tuple[TopKState, int]:
    """Check every field of a loaded checkpoint against the scan's ``header``; see the module."""
    where = f"checkpoint {path}"
    if not isinstance(payload, dict):
        raise CheckpointError(f"{where} holds a {type(payload).__name__}, not a scan")
    for key, expected in header.items():
        if key not in payload:
            raise CheckpointError(f"{where} lacks its {key!r}")
        found = payload[key]
        same = (
            isinstance(found, Tensor)
            and found.shape == expected.shape
            and torch.equal(found, expected)
            if isinstance(expected, Tensor)
            else type(found) is type(expected) and found == expected
        )
        if not same:
            shown = "the image list" if isinstance(expected, Tensor) else f"{found!r}"
            raise CheckpointError(
                f"{where} is from another scan: its {key} is {shown}, this scan's "
                f"differs; delete it or rerun without resume"
            )
    order: Tensor = header["image_ids"]
    done = _integer(payload, "done", where, 0, int(order.numel()))
    state = payload.get("state")
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} lacks its 'state' (a dict)")
    for key in _STATE_KEYS:
        if key not in state:
            raise CheckpointError(f"{where} lacks state field {key!r}")
    k = _integer(state, "k", where, 1, None)
    if k != header["k"]:
        raise CheckpointError(f"{where}: state k={k} but the scan's k={header['k']}")
    seen = _integer(state, "images_seen", where, 0, done)
    done_ids = order[:done].tolist()
    skipped = _skipped(state["skipped"], set(done_ids), where)
    if seen + len(skipped) != done:
        raise CheckpointError(
            f"{where}: done={done} but {seen} images read + {len(skipped)} skipped"
        )
    read_ids = torch.tensor(sorted(set(done_ids) - {i for i, _ in skipped}), dtype=torch.long)
    layers = state["layers"]
    if not isinstance(layers, dict):
        raise CheckpointError(f"{where}: state field 'layers' is not a dict")
    expected_layers = list(header["layers"]) if seen else []
    if list(layers) != expected_layers:
        raise CheckpointError(
            f"{where}: layers {list(layers)} after {seen} images read; expected {expected_layers}"
        )
    ranked: set[int] = set()
    for name, top in layers.items():
        ranked |= _check_layer(top, k, seen, read_ids, f"{where}, layer {name!r}")
    _check_digests(state["digests"], ranked, where)
    _check_stats(state["stats"], layers, seen, where)
    content = state["content"]
    if not isinstance(content, str) or len(content) != _HEX_DIGITS or not _is_hex(content):
        raise CheckpointError(f"{where}: state field 'content' is not {_HEX_DIGITS} hex digits")
    try:
        return TopKState.from_dict(state), done
    except (InputError, KeyError, IndexError, TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: malformed state ({error})") from error


def _integer(data: Mapping[str, Any], key: str, where: str, low: int, high: int | None) -> int:
    if key not in data:
        raise CheckpointError(f"{where} lacks its {key!r}")
    value = data[key]
    if type(value) is not int:
        raise CheckpointError(f"{where}: {key!r} is {type(value).__name__}, not an int")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f", {high}"
        raise CheckpointError(f"{where}: {key}={value} is outside [{low}{upper}]")
    return value


def _skipped(entries: object, done_ids: set[int], where: str) -> list[tuple[int, str]]:
    if not isinstance(entries, list):
        raise CheckpointError(f"{where}: state field 'skipped' is not a list")
    out = []
    for entry in entries:
        if (
            not isinstance(entry, list | tuple)
            or len(entry) != _SPATIAL
            or type(entry[0]) is not int
            or not isinstance(entry[1], str)
        ):
            raise CheckpointError(f"{where}: a skipped entry is not [image id, reason]")
        if entry[0] not in done_ids:
            raise CheckpointError(f"{where}: skipped image id {entry[0]} is not among those done")
        out.append((entry[0], entry[1]))
    if len({i for i, _ in out}) != len(out):
        raise CheckpointError(f"{where}: an image is listed as skipped twice")
    return out


def _tensor(
    top: Mapping[str, Any], key: str, dtype: torch.dtype, shape: Sequence[int], where: str
) -> Tensor:
    value = top.get(key)
    if not isinstance(value, Tensor) or value.dtype != dtype or tuple(value.shape) != tuple(shape):
        got = (
            f"{value.dtype} {tuple(value.shape)}"
            if isinstance(value, Tensor)
            else type(value).__name__
        )
        raise CheckpointError(f"{where}: {key} must be {dtype} {tuple(shape)}, got {got}")
    if value.layout != torch.strided or value.is_quantized or value.device.type != "cpu":
        raise CheckpointError(f"{where}: {key} must be a dense CPU tensor")
    return value


def _check_layer(top: object, k: int, seen: int, read_ids: Tensor, where: str) -> set[int]:
    """Validate one layer's top-k tensors; return the image ids it ranks."""
    if not isinstance(top, dict) or any(key not in top for key in _LAYER_KEYS):
        raise CheckpointError(f"{where}: needs a dict with {list(_LAYER_KEYS)}")
    channels = top.get("channels")
    if not isinstance(channels, Tensor) or channels.dim() != 1:
        raise CheckpointError(f"{where}: channels must be a 1-D tensor")
    count = int(channels.numel())
    channels = _tensor(top, "channels", torch.long, (count,), where)
    if count == 0 or int(channels[0]) < 0 or bool((channels[1:] <= channels[:-1]).any()):
        raise CheckpointError(f"{where}: channels must be distinct, ascending and >= 0")
    values = _tensor(top, "values", VALUE_DTYPE, (k, count), where)
    ids = _tensor(top, "image_ids", torch.long, (k, count), where)
    positions = _tensor(top, "positions", torch.long, (k, count, _SPATIAL), where)
    filled = ids != EMPTY_ID
    want = min(k, seen)
    if bool((filled.sum(dim=0) != want).any()) or bool(filled[want:].any()):
        raise CheckpointError(
            f"{where}: every map must hold its first {want} slots filled after {seen} images"
        )
    if bool(torch.isnan(values).any()):
        raise CheckpointError(f"{where}: values hold NaN")
    if bool((values[want:] != -math.inf).any()) or bool((positions[want:] != -1).any()):
        raise CheckpointError(f"{where}: empty slots must hold -inf and position -1")
    ranked_ids, ranked_values = ids[:want], values[:want]
    if bool((positions[:want] < 0).any()):
        raise CheckpointError(f"{where}: a ranked position is negative")
    if want and not bool(torch.isin(ranked_ids, read_ids).all()):
        bad = int(ranked_ids[~torch.isin(ranked_ids, read_ids)][0])
        raise CheckpointError(f"{where}: image id {bad} is not among the images read so far")
    ordered = torch.sort(ranked_ids, dim=0).values
    if bool((ordered[1:] == ordered[:-1]).any()):
        raise CheckpointError(f"{where}: a map holds the same image twice")
    above, below = ranked_values[:-1], ranked_values[1:]
    tie_order = (above == below) & (ranked_ids[:-1] > ranked_ids[1:])
    if bool((below > above).any()) or bool(tie_order.any()):
        raise CheckpointError(f"{where}: values are not in rank order (descending, ties by id)")
    return set(torch.unique(ranked_ids).tolist())


def _check_digests(digests: object, ranked: set[int], where: str) -> None:
    if not isinstance(digests, dict) or set(digests) != {"image_ids", "sha256"}:
        raise CheckpointError(f"{where}: state field 'digests' needs image_ids and sha256")
    ids = digests["image_ids"]
    if not isinstance(ids, Tensor) or ids.dim() != 1:
        raise CheckpointError(f"{where}: digests image_ids must be a 1-D tensor")
    _tensor(digests, "image_ids", torch.long, (int(ids.numel()),), where)
    _tensor(digests, "sha256", torch.uint8, (int(ids.numel()), DIGEST_BYTES), where)
    listed = ids.tolist()
    if len(set(listed)) != len(listed) or set(listed) != ranked:
        raise CheckpointError(f"{where}: digests must list each ranked image exactly once")


def _check_stats(stats: object, layers: Mapping[str, Any], seen: int, where: str) -> None:
    """Each layer's activation statistics cover its maps and agree with its top-1 values."""
    if not isinstance(stats, dict) or list(stats) != list(layers):
        raise CheckpointError(f"{where}: state field 'stats' must hold the layers {list(layers)}")
    for name, part in stats.items():
        at = f"{where}, statistics of layer {name!r}"
        if not isinstance(part, dict) or any(key not in part for key in _STATS_KEYS):
            raise CheckpointError(f"{at}: needs a dict with {list(_STATS_KEYS)}")
        top = layers[name]
        count = int(top["channels"].numel())
        channels = _tensor(part, "channels", torch.long, (count,), at)
        if not torch.equal(channels, top["channels"]):
            raise CheckpointError(f"{at}: maps differ from the top-k's")
        _integer(part, "images", at, seen, seen)  # every image read is counted
        maximum = _tensor(part, "maximum", VALUE_DTYPE, (count,), at)
        _tensor(part, "mean_sum", VALUE_DTYPE, (count,), at)
        fired = _tensor(part, "fired", torch.long, (count,), at)
        if bool(((fired < 0) | (fired > seen)).any()):
            raise CheckpointError(f"{at}: fired counts must lie in [0, {seen}]")
        if seen and not torch.equal(maximum, top["values"][0]):
            raise CheckpointError(f"{at}: maximum differs from the top-1 values")


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
