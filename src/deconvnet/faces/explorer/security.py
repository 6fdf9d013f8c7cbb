"""The explorer trusts only its own origin and bounds every request before reading it.

:class:`Guard` is pure ASGI middleware, outermost, so nothing of a refused request reaches
the app:

* **Host** must name an allowed host (the bound loopback address, ``localhost``, and the
  address ``--host`` bound): a page on another site that rebinds its DNS name to 127.0.0.1
  sends its own name as ``Host`` and is refused (403), so it cannot read the library, the
  scan or projections.
* **Origin**, on requests that change state (anything but GET, HEAD, OPTIONS), must be
  absent or ``http(s)://`` an allowed host: another site's form or ``fetch`` is refused.
* **Bodies** are counted while they stream, chunked ones included: past the route's cap
  (the upload cap for ``/api/upload``, :data:`MAX_JSON_BODY` elsewhere) the request is
  answered 413 and the rest is never read; a declared ``Content-Length`` over it is refused
  before any byte is read.

Every refusal is one line of JSON that never repeats what the request sent.
:class:`JsonErrorsH11Protocol` does the same for the malformed requests uvicorn answers
itself (a bad ``Content-Length``, broken chunking), which it would otherwise answer in
plain text.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Iterable
from urllib.parse import urlsplit

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Host names the explorer always answers (its own machine)."""
MAX_JSON_BODY = 64 * 1024
"""Largest body of any request but an upload (the JSON of ``/api/open`` is a file name)."""
UPLOAD_PATH = "/api/upload"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON = b"application/json"


class _BodyTooLarge(Exception):  # control flow: stops the app's read of the body
    pass


def allowed_hosts(bound: str | None = None) -> frozenset[str]:
    """The loopback names, and ``bound`` (the address the server listens on) if given."""
    names = set(LOOPBACK_HOSTS)
    if bound:
        names.add(_normal(bound))
    return frozenset(names)


def host_name(value: str) -> str | None:
    """The host of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), normalised;
    ``None`` when malformed."""
    if value.startswith("["):
        host, closed, rest = value[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        if value.count(":") > 1:  # an IPv6 address must be bracketed in a Host header
            return None
        host, _, port = value.partition(":")
    if not host or not (port.isascii() and (port.isdigit() or not port)):
        return None
    return _normal(host)


def error_body(message: str) -> bytes:
    """The one-line JSON error every refusal carries."""
    return json.dumps({"error": message}).encode()


class Guard:
    """ASGI middleware enforcing the module's rules; see there."""

    def __init__(self, app: ASGIApp, *, hosts: Iterable[str], upload_limit: int) -> None:
        self.app = app
        self.hosts = frozenset(_normal(host) for host in hosts)
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _answer(send, *refusal)
            return
        limit = self.upload_limit if scope["path"] == UPLOAD_PATH else MAX_JSON_BODY
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _answer(send, 413, f"request body larger than {limit} bytes")
            return
        await _Bounded(self.app, limit)(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = host_name(headers.get("host", ""))
        if host is None or host not in self.hosts:
            return 403, "the explorer answers only requests for its own address (Host)"
        origin = headers.get("origin")
        if scope["method"] not in SAFE_METHODS and origin is not None:
            parts = urlsplit(origin) if origin != "null" else None
            if parts is None or parts.scheme not in ("http", "https"):
                return 403, "the explorer accepts changes only from its own pages (Origin)"
            if parts.hostname is None or _normal(parts.hostname) not in self.hosts:
                return 403, "the explorer accepts changes only from its own pages (Origin)"
        return None


class _Bounded:
    """One request whose body is counted as it streams; past ``limit`` the app's response
    is replaced by a 413 (or given one, if it had not answered)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit
        self.received = 0
        self.exceeded = False
        self.started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            if self.exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    self.exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded(message: Message) -> None:
            if self.exceeded:
                return  # whatever the app says about a body it could not finish reading
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        with contextlib.suppress(_BodyTooLarge):  # the app stopped reading: answered below
            await self.app(scope, counted, guarded)
        if self.exceeded and not self.started:
            await _answer(send, 413, f"request body larger than {self.limit} bytes")


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering requests it cannot parse with a one-line JSON 400."""

    def send_400_response(self, msg: str) -> None:
        body = error_body("malformed HTTP request")
        headers = [
            (b"content-type", JSON),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers)) or b"")
        self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
        self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        self.transport.close()


async def _answer(send: Send, status: int, message: str) -> None:
    """A refusal; the connection closes after it (the body may not have been read)."""
    body = error_body(message)
    headers = [
        (b"content-type", JSON),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (latin-1, as HTTP/1.1 carries them); a
    repeated header keeps its first value."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def _normal(host: str) -> str:
    """A host name compared case-insensitively, without a trailing dot; IPv6 compressed."""
    name = host.strip().lower().rstrip(".").strip("[]")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name
