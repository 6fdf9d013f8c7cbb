"""The result cache: keys from what a result depends on, entries read back as untrusted."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from deconvnet.inputs.documents import SCHEMA_CONFIG
from deconvnet.instruments.cache import CACHE_ENVIRONMENT, ResultCache, cache_key, default_folder


class Entry(BaseModel):
    model_config = SCHEMA_CONFIG
    value: float


def test_keys_depend_on_content_not_order() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 1.5})
    assert len(cache_key({})) == 64


def test_entries_round_trip_and_bad_ones_read_as_missing(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    key = cache_key({"x": 1})
    assert cache.read("dream", key, Entry) is None and cache.read_picture("dream", key) is None
    picture = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    cache.write("dream", key, {"value": 2.5}, picture)
    assert cache.read("dream", key, Entry) == Entry(value=2.5)
    assert np.array_equal(cache.read_picture("dream", key), picture)
    for text in ('{"value": "2.5"}', '{"value": NaN}', "{", '{"value": 1}' + " " * (17 << 20)):
        (tmp_path / "dream" / f"{key}.json").write_text(text)
        assert cache.read("dream", key, Entry) is None
    path = tmp_path / "dream" / f"{key}.json"
    path.unlink()
    os.mkfifo(path)  # never waited on
    assert cache.read("dream", key, Entry) is None
    (tmp_path / "dream" / f"{key}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert cache.read_picture("dream", key) is None


def test_names_are_checked(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    for kind, key in (("../up", cache_key({})), ("dream", "../../x"), ("Dream", cache_key({}))):
        with pytest.raises(ValueError):
            cache.write(kind, key, {})


def test_the_default_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENVIRONMENT, "/somewhere/cache")
    assert default_folder() == Path("/somewhere/cache")
    monkeypatch.delenv(CACHE_ENVIRONMENT)
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert default_folder() == Path("/xdg/deconvnet")
