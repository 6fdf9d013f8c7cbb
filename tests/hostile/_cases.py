"""Generators of hostile inputs, seeded and deterministic: names, JSON variants, HTTP
requests. Each returns a list of cases; tests take a sample in the default suite and all
of them under ``-m slow``."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from typing import Any

# --------------------------------------------------------------------------- names

NAME_ATOMS = (
    "..", ".", "", "a", "b.png", "tiles", "deep", "link_out", "link_in", "loop", "~", "C:",
    "%2e%2e", "..\\..", "a\\b", "\x00", "\x1b]0;pwned\x07", "\u202e", "\uff0e\uff0e",
    "\u2215", " ", "...", "x" * 300, "é", "\udcff",
)  # fmt: skip
"""Pieces of names: climbs, separators, links laid out by the test, controls, look-alikes."""

FIXED_NAMES = (
    "../victim.png", "../../victim.png", "/tmp/victim.png", "//victim.png", "~/victim.png",
    "C:\\victim.png", "C:victim.png", "\\\\server\\share\\v.png", "a/../../victim.png",
    "deep/../x.png", "deep/../../x.png", "deep/../../../victim.png", "link_out/victim.png",
    "link_in/x.png", "loop/x.png", "./x.png", "a//b.png", "x.png/", "x.png\x00.txt",
    "tiles/conv1/map0000_rank0_projection.png", "x.png", "d1/x.png", "", ".", "..",
)  # fmt: skip
"""Hand-picked cases: every known way out, and names that must work."""


def hostile_names(count: int, seed: int = 0) -> list[str]:
    """:data:`FIXED_NAMES`, then random joins of 1-6 :data:`NAME_ATOMS` by ``/``."""
    rng = random.Random(seed)
    names = list(FIXED_NAMES)
    while len(names) < count:
        parts = [rng.choice(NAME_ATOMS) for _ in range(rng.randint(1, 6))]
        names.append("/".join(parts) + rng.choice(("", ".png", "/x.png")))
    return names[:count]


# --------------------------------------------------------------------------- JSON

_INFINITY = object()
_NAN = object()
REPLACEMENTS: tuple[Any, ...] = (
    None, True, False, 0, -1, 2**64, -(2**63), 1e308, 0.5, "", "x", "../../victim.png",
    "/etc/passwd", [], {}, [1, 2], {"a": 1}, "\x1b[2J", "a" * 10_000, _INFINITY, _NAN,
)  # fmt: skip
"""Values a tampered field may get: wrong types, edge numbers, paths where numbers belong."""


def json_variants(document: Any, count: int, seed: int = 0) -> list[bytes]:
    """``count`` tampered versions of ``document`` as JSON bytes: a field deleted, replaced
    by one of :data:`REPLACEMENTS`, duplicated in a list; deep nesting; broken bytes."""
    rng = random.Random(seed)
    paths = list(_paths(document))
    variants = [
        b"", b"{", b"[]", b"null", b"\xff\xfe{}", b'{"format": 1}', _nested(100), _nested(5000),
        json.dumps(document).encode()[: len(json.dumps(document)) // 2],
    ]  # fmt: skip
    while len(variants) < count:
        tampered = copy.deepcopy(document)
        path = rng.choice(paths)
        action = rng.random()
        if action < 0.2 and path:
            _delete(tampered, path)
        elif action < 0.3 and path:
            _duplicate(tampered, path)
        else:
            _set(tampered, path, rng.choice(REPLACEMENTS))
        variants.append(_dumps(tampered))
    return variants[:count]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:3]):  # the first few items stand for the rest
            yield from _paths(value, (*prefix, index))


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    node = document
    for key in path[:-1]:
        node = node[key]
    return node


def _delete(document: Any, path: tuple[Any, ...]) -> None:
    del _parent(document, path)[path[-1]]


def _duplicate(document: Any, path: tuple[Any, ...]) -> None:
    parent = _parent(document, path)
    if isinstance(parent, list):
        parent.append(copy.deepcopy(parent[path[-1]]))


def _set(document: Any, path: tuple[Any, ...], value: Any) -> None:
    if not path:
        return
    _parent(document, path)[path[-1]] = value


def _dumps(document: Any) -> bytes:
    def encode(node: Any) -> Any:
        if node is _INFINITY:
            return float("inf")
        if node is _NAN:
            return float("nan")
        if isinstance(node, dict):
            return {key: encode(value) for key, value in node.items()}
        if isinstance(node, list):
            return [encode(value) for value in node]
        return node

    return json.dumps(encode(document), allow_nan=True).encode()  # NaN, Infinity tokens


def _nested(depth: int) -> bytes:
    return b'{"format": "deconvnet-topk-index/1", "k": 1, "stats": {}, "entries": [], "x": ' + (
        b"[" * depth + b"]" * depth + b"}"
    )


# --------------------------------------------------------------------------- HTTP

FOREIGN_HOSTS = (
    "evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example",
    "127.0.0.2", "0.0.0.0", "[::2]", "127.0.0.1@evil.example", "", "a b", "[::1", "::1",
    "localhost:abc", "xn--80ak6aa92e.com", "LOCALHOST.evil", "127.1", "2130706433",
)  # fmt: skip
"""``Host`` values a rebinding page or a confused client sends; none names the explorer."""
OWN_HOSTS = ("127.0.0.1", "localhost", "LOCALHOST", "localhost.", "[::1]")
"""``Host`` values that do (with or without the port)."""
FOREIGN_ORIGINS = (
    "http://evil.example", "null", "https://127.0.0.1.evil.example", "file://", "http://[::2]",
    "javascript:alert(1)", "http://evil.example:8000",
)  # fmt: skip


def raw_request(
    method: str, path: str, host: str | None, *, headers: dict[str, str] | None = None,
    body: bytes = b"", chunked: bool = False,
) -> bytes:  # fmt: skip
    """One HTTP/1.1 request as bytes (``Connection: close``), optionally chunked."""
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    lines.append("Connection: close")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
    else:
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def multipart(name: str, data: bytes, *, encoding: str | None = None) -> tuple[str, bytes]:
    """(content type, body) of a one-file multipart form, with a transfer encoding if given."""
    boundary = "hostileboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/png\r\n"
    )
    if encoding:
        head += f"Content-Transfer-Encoding: {encoding}\r\n"
    body = head.encode() + b"\r\n" + data + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body
