"""Reading JSON documents back as untrusted input (deconvnet.inputs.documents)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel

from deconvnet.errors import InputError
from deconvnet.inputs.documents import (
    MAX_DEPTH,
    SCHEMA_CONFIG,
    Count,
    nesting_depth,
    parse_document,
    read_document,
)
from tests._fuzz import deadline


class Item(BaseModel):
    model_config = SCHEMA_CONFIG
    size: Count


class Doc(BaseModel):
    model_config = SCHEMA_CONFIG
    items: list[Item]


def test_nesting_is_counted_outside_strings() -> None:
    assert nesting_depth(b'{"a": [[1], {"b": "[[[[[{{{{"}]}') == 3
    assert nesting_depth(b'"\\"[[["') == 0
    assert nesting_depth(b"[" * 40 + b"]" * 40) == 40


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"items": [{"size": 1}, {"size": "2"}]}', r"field items\[1\]\.size: Input should be"),
        (b'{"items": [{"size": true}]}', r"field items\[0\]\.size: Input should be a valid int"),
        (b'{"items": [{"size": 1e400}]}', r"field items\[0\]\.size"),
        (b'{"items": [{"size": -1}]}', r"greater than or equal to 0"),
        (b'{"items": [{"size": NaN}]}', r"field items\[0\]\.size"),
        (b'{"items": [{}]}', r"field items\[0\]\.size: Field required"),
        (b"[]", r"field \(top level\)"),
        (b'{"items": [', r"not valid JSON"),
        (
            b'{"items": []' + b', "x": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}",
            r"nested 34 deep",
        ),
    ],
)
def test_a_bad_document_is_one_line_naming_the_field(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message) as refused:
        parse_document(data, Doc, what="doc")
    assert "\n" not in str(refused.value)


def test_only_regular_files_under_the_limit_are_read(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_bytes(b'{"items": [{"size": 3}]}')
    assert read_document(path, Doc, what="doc").items[0].size == 3
    with pytest.raises(InputError, match="more than the limit"):
        read_document(path, Doc, what="doc", limit=10)
    os.mkfifo(tmp_path / "pipe.json")
    with deadline(5.0), pytest.raises(InputError, match="FIFO"):
        read_document(tmp_path / "pipe.json", Doc, what="doc")
    with pytest.raises(InputError, match="does not exist"):
        read_document(tmp_path / "gone.json", Doc, what="doc")
