"""The schema of ``manifest.json`` (what every sub-command writes beside its files), for
reading one back as untrusted input: ``--overwrite`` deletes the files it lists, and the
static site shows the model and weights a scan's manifest names.

Only the fields the tool reads are typed; the rest are kept as they are. The ``files`` it
lists are checked to be strings here and resolved with
:func:`deconvnet.storage.paths.inside` by whoever touches them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field

from deconvnet.inputs.documents import SCHEMA_CONFIG, Text, read_document

MANIFEST_FILE = "manifest.json"
MAX_FILES = 1_000_000
"""Most files one manifest may list."""


class ManifestDocument(BaseModel):
    """The typed part of a manifest; every field optional (a library scan has none)."""

    model_config = SCHEMA_CONFIG
    command: Text | None = None
    model: Text | None = None
    weights: Text | None = None
    weights_sha256: Text | None = None
    data: Text | None = None
    files: Annotated[list[Text], Field(max_length=MAX_FILES)] | None = None


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest at ``path`` as plain JSON values, validated (absent fields stay absent).

    Raises
    ------
    InputError
        Not a regular file, too large or deep, not JSON, or a typed field of the wrong
        type (one line naming it).
    """
    document = read_document(Path(path), ManifestDocument, what="manifest")
    return document.model_dump(mode="json", exclude_unset=True)
