"""Results that are costly to compute, kept on disk by what they depend on, so asking again
is free (a site rebuilt, a page opened twice).

A :class:`ResultCache` is a folder (``--cache DIR``; the command line's default is
:func:`default_folder`). An entry lives at ``KIND/KEY.json`` (and ``KIND/KEY.png`` when it
has a picture): ``KEY`` is the SHA-256 of everything the result depends on, written as
canonical JSON by :func:`cache_key` (the model's parameters by their digest, the unit, the
settings, the format). The names are ours, not read from a file, and still go through the
containment check. Entries are written atomically and read back as untrusted documents:
bounded, validated by the caller's schema; one that fails (a truncated file, a hand
edit, another format) is treated as missing and computed again, never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, Field
from torch import nn

from deconvnet.errors import DeconvnetError
from deconvnet.inputs.documents import SCHEMA_CONFIG, Count, Document, Text, read_document
from deconvnet.inputs.images import decode_image
from deconvnet.inputs.reading import read_regular_file
from deconvnet.instruments.topk.scan import model_fingerprint
from deconvnet.storage.atomic import atomic_write
from deconvnet.storage.paths import inside

CACHE_ENVIRONMENT = "DECONVNET_CACHE"
"""Environment variable that names the command line's default cache folder."""
MAX_ENTRY_BYTES = 16 << 20
"""Largest cached document or picture read back."""
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_KEY = re.compile(r"^[0-9a-f]{64}$")


class UnitRecord(BaseModel):
    """What every cached result of one unit starts with; a reader checks each field
    against what it asked for before using the entry."""

    model_config = SCHEMA_CONFIG
    format: Text
    key: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    layer: Text
    map: Count


def default_folder() -> Path:
    """``$DECONVNET_CACHE``, else ``$XDG_CACHE_HOME/deconvnet``, else ``~/.cache/deconvnet``
    (where torch.hub keeps its downloads too)."""
    chosen = os.environ.get(CACHE_ENVIRONMENT)
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deconvnet"


def cache_key(parts: Mapping[str, Any]) -> str:
    """SHA-256 of ``parts`` as canonical JSON (sorted keys, no spaces): equal parts, equal key."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def unit_key(model: nn.Module, form: str, layer: str, channel: int, **parts: Any) -> str:
    """The key of one unit's result: its format, the model (its parameters' digest and its
    class), the layer, the map and whatever else it depends on (``parts``)."""
    return cache_key(
        {
            "format": form,
            "model": model_fingerprint(model),
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "layer": layer,
            "map": channel,
            **parts,
        }
    )


def unit_header(form: str, key: str, layer: str, channel: int) -> dict[str, Any]:
    """The fields every cached unit result starts with (:class:`UnitRecord`)."""
    return {"format": form, "key": key, "layer": layer, "map": channel}


def tensor_digest(x: torch.Tensor) -> str:
    """SHA-256 of a tensor's shape and float32 values: an input image in a cache key."""
    data = x.detach().to("cpu", torch.float32).contiguous().numpy()
    digest = hashlib.sha256(f"{data.shape}\n".encode())
    digest.update(np.ascontiguousarray(data).tobytes())
    return digest.hexdigest()


class ResultCache:
    """Entries ``KIND/KEY.json`` (+ ``.png``) under ``folder`` (see the module)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"ResultCache({str(self.folder)!r})"

    def read(self, kind: str, key: str, schema: type[Document]) -> Document | None:
        """The entry's document validated by ``schema``, or None when it is missing or
        fails (then it is computed again and replaced)."""
        path = self._path(kind, key, "json")
        if not path.is_file():
            return None
        try:
            return read_document(path, schema, what="cache entry", limit=MAX_ENTRY_BYTES)
        except DeconvnetError:
            return None

    def read_picture(self, kind: str, key: str) -> np.ndarray | None:
        """The entry's picture as ``(H, W, 3)`` uint8, or None when missing or unreadable."""
        path = self._path(kind, key, "png")
        try:
            data = read_regular_file(path, MAX_ENTRY_BYTES, what="cache picture")
            return decode_image(data, path)
        except (DeconvnetError, OSError):
            return None

    def write(
        self,
        kind: str,
        key: str,
        document: Mapping[str, Any],
        picture: np.ndarray | None = None,
    ) -> Path:
        """Store ``document`` (plain JSON values) and ``picture`` (uint8 ``(H, W, 3)``),
        each atomically, the picture first so a document never names a missing picture."""
        if picture is not None:
            encoded = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(picture)).save(encoded, format="PNG")
            data = encoded.getvalue()
            atomic_write(self._path(kind, key, "png"), lambda handle: handle.write(data))
        text = json.dumps(document, sort_keys=True, indent=1, allow_nan=False) + "\n"
        encoded_text = text.encode("utf-8")
        return atomic_write(
            self._path(kind, key, "json"), lambda handle: handle.write(encoded_text)
        )

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        if not _KIND.match(kind) or not _KEY.match(key):
            raise ValueError(f"cache kind {kind!r} or key {key!r} is malformed")
        return inside(self.folder, f"{kind}/{key}.{suffix}", what="cache entry")
