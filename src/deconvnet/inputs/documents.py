"""Reading the JSON documents the tool reads back (a scan's index, manifests, ``parts.json``)
as untrusted input: bounded, then validated by a schema.

Every document goes through :func:`read_document`: the regular-file reader (no FIFO, no
device, at most :data:`MAX_DOCUMENT_BYTES`), a nesting limit (:data:`MAX_DEPTH`, checked on
the raw bytes before anything is parsed), then a pydantic model, strict (no ``"1"`` for
``1``, no ``true`` for an integer, no ``NaN`` or ``Infinity``) with bounded numbers and
strings. A document that fails is one :class:`~deconvnet.errors.InputError` line naming the
file and the first bad field (``entries[3].tile_file: Input should be a valid string``),
never the value itself.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deconvnet.errors import InputError
from deconvnet.inputs.reading import read_regular_file

MAX_DOCUMENT_BYTES = 64 << 20
"""Largest JSON document read (64 MiB): an index of 100,000 ranked entries is about 50 MB."""
MAX_DEPTH = 32
"""Deepest nesting of arrays and objects; the tool's own documents reach 4."""
MAX_INT = 1 << 53
"""Largest integer accepted anywhere (exact in a float, far above any count or pixel)."""
MAX_TEXT = 4096
"""Longest string accepted where a schema sets no other bound (names, paths, reasons)."""

SCHEMA_CONFIG = ConfigDict(strict=True, allow_inf_nan=False, extra="allow", frozen=True)
"""What every document schema uses: strict types, finite numbers, unknown fields kept."""

Count = Annotated[int, Field(ge=0, le=MAX_INT)]
Integer = Annotated[int, Field(ge=-MAX_INT, le=MAX_INT)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]

Document = TypeVar("Document", bound=BaseModel)

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)


def read_document(
    path: str | os.PathLike[str],
    schema: type[Document],
    *,
    what: str,
    limit: int = MAX_DOCUMENT_BYTES,
) -> Document:
    """The JSON file ``path`` validated by ``schema`` (see the module).

    Raises
    ------
    InputError
        Missing, not a regular file, over ``limit`` bytes, nested deeper than
        :data:`MAX_DEPTH`, not JSON, or a field the schema refuses (named).
    """
    try:
        data = read_regular_file(path, limit, what=what)
    except FileNotFoundError as error:
        raise InputError(f"{what} {path} does not exist") from error
    return parse_document(data, schema, what=f"{what} {path}")


def parse_document(data: bytes, schema: type[Document], *, what: str) -> Document:
    """``data`` validated by ``schema``; ``what`` names it in the one-line error."""
    depth = nesting_depth(data)
    if depth > MAX_DEPTH:
        raise InputError(f"{what} is nested {depth} deep, more than the limit of {MAX_DEPTH}")
    try:
        return schema.model_validate_json(data)
    except ValidationError as error:
        raise InputError(f"{what}: {describe(error)}") from error


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings (vectorised; malformed JSON
    gives some number, and the parser refuses it later)."""
    bare = np.frombuffer(_STRINGS.sub(b'""', data), dtype=np.uint8)
    steps = np.isin(bare, _OPEN).astype(np.int64) - np.isin(bare, _CLOSE).astype(np.int64)
    return int(np.cumsum(steps).max(initial=0))


def describe(error: ValidationError) -> str:
    """The first problem of ``error`` as ``field: reason`` (how many more, if any)."""
    problems = error.errors(include_url=False, include_input=False)
    if not problems:
        return "invalid"
    first = problems[0]
    where = field_path(first.get("loc", ()))
    reason = " ".join(str(first.get("msg", "invalid")).split())
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    if first.get("type") == "json_invalid":
        return f"not valid JSON ({reason}){more}"
    reason = reason.removeprefix("Value error, ")
    return f"field {where or '(top level)'}: {reason}{more}"


def field_path(location: tuple[int | str, ...]) -> str:
    """``('entries', 3, 'tile_file')`` as ``entries[3].tile_file`` (names escaped, cut)."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":  # pydantic's mark for a mapping's key rather than its value
            text += " (the name)"
        else:
            name = str(part)
            name = ascii(name)[1:-1] if not name.isprintable() else name
            text += f".{name[:80]}" if text else name[:80]
    return text
