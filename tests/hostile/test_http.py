"""The explorer under hostile HTTP: a real ``deconvnet serve`` (a subprocess on a free
loopback port, stopped by the fixture) and raw requests over sockets, each bounded by a
timeout: foreign ``Host`` and ``Origin`` headers, chunked and lying bodies, malformed
requests uvicorn answers itself, transfer-encoded parts, a 9,400 x 9,400 PNG.

Every answer to a bad request must be a 4xx whose body is one line of JSON that repeats
nothing the request sent; the server's memory must stay bounded (read from
``/proc/PID/status``).
"""

from __future__ import annotations

import io
import json
import select
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faces.conftest import make_photos
from tests.hostile._cases import (
    FOREIGN_HOSTS,
    FOREIGN_ORIGINS,
    OWN_HOSTS,
    multipart,
    raw_request,
)
from tests.hostile.conftest import HANG, TRACEBACK, WRONG, Tally, one_line_refusal, run_cli

pytest.importorskip("uvicorn", reason="the explorer extra is not installed")

STARTUP_S = 120.0
REQUEST_S = 20.0
UPLOAD_MB = 2
MARK = "ECHOMARK"
"""Put into every hostile request: no answer may contain it."""
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(port, pid) of ``deconvnet serve`` over the default model and a small library."""
    photos = make_photos(tmp_path_factory.mktemp("library") / "photos", count=2)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "deconvnet",
        "serve",
        "--images",
        str(photos),
        "--port",
        str(port),
        "--max-upload-mb",
        str(UPLOAD_MB),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("deconvnet serve did not start") from None
                time.sleep(0.1)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def exchange(
    port: int, request: bytes, timeout: float = REQUEST_S
) -> tuple[int, dict[str, str], bytes]:
    """Send ``request``, read until the server closes: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(request)
        data = _read_all(connection, timeout)
    return parse_response(data)


def _read_all(connection: socket.socket, timeout: float) -> bytes:
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = connection.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 "):
        return 0, {}, data
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def json_error(status: int, headers: dict[str, str], body: bytes) -> str | None:
    """Why the answer is not a one-line JSON 4xx ``{"error": ...}``; ``None`` if it is."""
    if not 400 <= status < 500:
        return f"status {status}"
    if "application/json" not in headers.get("content-type", ""):
        return f"content type {headers.get('content-type')!r}: {body[:80]!r}"
    try:
        document = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:80]!r}"
    if set(document) != {"error"} or "\n" in document["error"]:
        return f"not one error line: {body[:120]!r}"
    return None


def memory_kib(pid: int, field: str = "VmHWM") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def refused(tally: Tally, surface: str, port: int, request: bytes, detail: str) -> None:
    """One case: a bad request must get a one-line JSON 4xx that does not echo it."""
    with tally.case(surface, detail) as mark:
        status, headers, body = exchange(port, request)
        if status == 0:
            mark(HANG if not body else TRACEBACK, f"{detail}: no HTTP answer: {body[:100]!r}")
            return
        problem = json_error(status, headers, body)
        if problem:
            mark(WRONG, f"{detail}: {problem}")
        elif MARK.encode() in body or b"photo_" in body:
            mark(WRONG, f"{detail}: the answer repeats the request or shows the library")


def test_foreign_hosts_are_refused(tally: Tally, server: tuple[int, int]) -> None:
    port, _ = server
    for host in FOREIGN_HOSTS:
        for method, path, body in (
            ("GET", "/api/model", b""),
            ("GET", "/", b""),
            ("GET", "/api/library/photo_0.png", b""),
            ("POST", "/api/open", b'{"name": "photo_0.png"}'),
        ):
            request = raw_request(
                method,
                path,
                host,
                body=body,
                headers={"Content-Type": "application/json"} if body else {},
            )
            if host in ("a b", "[::1"):  # uvicorn itself refuses these: still JSON
                request = request.replace(b"Connection", f"X-{MARK}: 1\r\nConnection".encode(), 1)
            refused(tally, "HTTP Host", port, request, f"{method} {path} Host {host!r}")
    refused(tally, "HTTP Host", port, b"GET /api/model HTTP/1.0\r\n\r\n", "no Host (HTTP/1.0)")
    assert tally.bad("HTTP Host") == {}


def test_own_hosts_are_served(tally: Tally, server: tuple[int, int]) -> None:
    port, _ = server
    for host in OWN_HOSTS:
        for shown in (host, f"{host}:{port}"):
            with tally.case("HTTP own Host", shown) as mark:
                status, _, body = exchange(port, raw_request("GET", "/api/model", shown))
                if status != 200 or b"photo_0.png" not in body:
                    mark(WRONG, f"Host {shown!r}: {status} {body[:100]!r}")
    assert tally.bad("HTTP own Host") == {}


def test_writes_from_foreign_origins_are_refused(tally: Tally, server: tuple[int, int]) -> None:
    port, _ = server
    body = b'{"name": "photo_0.png"}'
    for origin in FOREIGN_ORIGINS:
        request = raw_request(
            "POST",
            "/api/open",
            "127.0.0.1",
            body=body,
            headers={"Origin": origin, "Content-Type": "application/json"},
        )
        refused(tally, "HTTP Origin", port, request, f"Origin {origin!r}")
    with tally.case("HTTP Origin", "own origin") as mark:
        own = raw_request(
            "POST",
            "/api/open",
            "localhost",
            body=body,
            headers={"Origin": f"http://localhost:{port}", "Content-Type": "application/json"},
        )
        status, _, answer = exchange(port, own)
        if status != 200:
            mark(WRONG, f"own origin refused: {status} {answer[:100]!r}")
    assert tally.bad("HTTP Origin") == {}


def test_error_bodies_never_echo_the_request(tally: Tally, server: tuple[int, int]) -> None:
    port, _ = server
    big = MARK * 6000  # 48 kB, under the JSON cap
    json_body = json.dumps({"name": big}).encode()
    requests = [
        raw_request(
            "POST",
            "/api/open",
            "localhost",
            body=json_body,
            headers={"Content-Type": "application/json"},
        ),
        raw_request("GET", f"/api/library/{MARK}.png", "localhost"),
        raw_request("GET", f"/site/{MARK}", "localhost"),
        raw_request("GET", f"/static/{MARK}.js", "localhost"),
        raw_request("GET", f"/api/images/0123456789abcdef/layers/{MARK}", "localhost"),
        raw_request("GET", f"/api/images/{MARK}", "localhost"),
        raw_request("GET", f"/nowhere/{MARK}?q={MARK}", "localhost"),
        raw_request(
            "POST",
            "/api/upload",
            "localhost",
            body=multipart(f"{MARK}.png", b"GIF89a not an image")[1],
            headers={"Content-Type": multipart("x", b"")[0]},
        ),
        raw_request(
            "POST",
            "/api/open",
            "localhost",
            body=b"{" + MARK.encode(),
            headers={"Content-Type": "application/json"},
        ),
    ]
    for number, request in enumerate(requests):
        refused(tally, "HTTP echo", port, request, f"request {number}")
    assert tally.bad("HTTP echo") == {}


def test_malformed_requests_get_json_from_uvicorn_too(
    tally: Tally, server: tuple[int, int]
) -> None:
    port, _ = server
    head = "POST /api/open HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    requests = [
        head + "Content-Length: abc\r\n\r\n{}",
        head + "Content-Length: -1\r\n\r\n{}",
        head + "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        head + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        f"GET /{MARK} HTTP/1.1 extra\r\nHost: localhost\r\n\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
        f"GET / HTTP/1.1\r\nHost: localhost\r\nX-{MARK}\r\n\r\n",
    ]
    for number, text in enumerate(requests):
        refused(tally, "HTTP malformed", port, text.encode("latin-1"), f"request {number}")
    assert tally.bad("HTTP malformed") == {}


def stream_chunked(port: int, path: str, content_type: str, total: int) -> tuple[int, int, bytes]:
    """Send a chunked body of up to ``total`` bytes in 64 kB chunks, stopping as soon as
    the server answers; (bytes sent, status, body)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"x" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_S) as connection:
        connection.sendall(head)
        if content_type.startswith("multipart/"):  # a well-formed part, then endless bytes
            start = multipart("x.png", b"")[1].split(b"\r\n\r\n")[0] + b"\r\n\r\n"
            connection.sendall(f"{len(start):x}\r\n".encode() + start + b"\r\n")
        try:
            while sent < total:
                if select.select([connection], [], [], 0)[0]:
                    break  # the server has answered (or closed)
                connection.sendall(frame)
                sent += len(chunk)
            else:
                connection.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = parse_response(_read_all(connection, REQUEST_S))
    return sent, status, body


def test_chunked_bodies_are_cut_off_at_the_cap(tally: Tally, server: tuple[int, int]) -> None:
    """The issue's cases: a chunked 60 MB upload against a 2 MB cap, a chunked 50 MB JSON."""
    port, pid = server
    before = memory_kib(pid, "VmRSS")
    cases = [
        ("/api/upload", multipart("x", b"")[0], 60 * MiB, UPLOAD_MB * MiB),
        ("/api/open", "application/json", 50 * MiB, 64 * 1024),
    ]
    for path, kind, total, cap in cases:
        with tally.case("HTTP body caps", path) as mark:
            sent, status, body = stream_chunked(port, path, kind, total)
            if status != 413 or json_error(status, {"content-type": "application/json"}, body):
                mark(WRONG, f"{path}: {status} {body[:100]!r}")
            elif sent > cap + 8 * MiB:  # socket buffers hold a few MB in flight
                mark(WRONG, f"{path}: the server read {sent} bytes before refusing (cap {cap})")
    grown = (memory_kib(pid, "VmRSS") - before) / 1024
    with tally.case("HTTP body caps", "memory") as mark:
        if grown > 64:
            mark(WRONG, f"the server grew {grown:.0f} MB reading refused bodies")
    for length in (UPLOAD_MB * MiB * 10, 1 << 40):  # a declared length over the cap
        request = (
            f"POST /api/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
        ).encode()
        refused(tally, "HTTP body caps", port, request, f"declared {length}")
    assert tally.bad("HTTP body caps") == {}


def huge_png(side: int) -> bytes:
    """A valid grey PNG of ``side`` x ``side`` zero pixels: a few hundred kB on the wire."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    packer, parts, row = zlib.compressobj(9), [], bytes(side + 1)
    for _ in range(side):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


def test_a_huge_png_stays_within_the_memory_budget(tally: Tally, server: tuple[int, int]) -> None:
    port, pid = server
    png = huge_png(9400)
    assert len(png) < UPLOAD_MB * MiB
    before = memory_kib(pid)
    kind, body = multipart("huge.png", png)
    for attempt in range(3):
        request = raw_request(
            "POST", "/api/upload", "localhost", body=body, headers={"Content-Type": kind}
        )
        refused(tally, "HTTP decode budget", port, request, f"9400x9400 PNG, try {attempt}")
    grown = (memory_kib(pid) - before) / 1024
    with tally.case("HTTP decode budget", "peak memory") as mark:
        if grown > 300:
            mark(WRONG, f"three 9,400x9,400 uploads raised the server's peak by {grown:.0f} MB")
    assert tally.bad("HTTP decode budget") == {}


def test_transfer_encoded_parts_are_refused(tally: Tally, server: tuple[int, int]) -> None:
    """A part that says it is encoded is not taken as raw bytes, even when they decode."""
    from PIL import Image

    port, _ = server
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    for encoding in ("base64", "quoted-printable", "x-uuencode", "BASE64"):
        kind, body = multipart("x.png", buffer.getvalue(), encoding=encoding)
        request = raw_request(
            "POST", "/api/upload", "localhost", body=body, headers={"Content-Type": kind}
        )
        refused(tally, "HTTP transfer encoding", port, request, encoding)
    assert tally.bad("HTTP transfer encoding") == {}


def test_no_page_loads_anything_from_elsewhere(tally: Tally, server: tuple[int, int]) -> None:
    port, _ = server
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        refused(tally, "HTTP pages", port, raw_request("GET", path, "localhost"), path)
    for path in ("/", "/static/explorer.js", "/static/explorer.css"):
        with tally.case("HTTP pages", path) as mark:
            status, _, body = exchange(port, raw_request("GET", path, "localhost"))
            external = [word for word in (b"http://", b"https://", b"//cdn") if word in body]
            if status != 200 or external:
                mark(WRONG, f"{path}: {status}, loads {external}")
    assert tally.bad("HTTP pages") == {}


@pytest.mark.parametrize(
    "host", ["no-such-host.invalid", "256.1.1.1", "exa mple", "8.8.8.8", "\x1b[2J", "a" * 300]
)
def test_a_bad_host_is_one_line(
    tally: Tally, host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unresolvable, malformed or not this machine's: one line, exit 1, before any model."""
    bad_before = tally.bad("serve --host")
    with tally.case("serve --host", host) as mark:
        code, _, err = run_cli(["serve", "--host", host, "--port", str(free_port())], capsys)
        if not one_line_refusal(code, err):
            mark(TRACEBACK, f"--host {host!r}: exit {code}: {err[-300:]}")
    assert tally.bad("serve --host") == bad_before


def test_a_big_jpeg_decodes_downscaled_within_the_budget(
    tally: Tally, server: tuple[int, int]
) -> None:
    """Over the budget at full size, a JPEG decodes at 1/2 scale instead of being refused."""
    from PIL import Image

    port, _ = server
    buffer = io.BytesIO()
    Image.new("RGB", (5200, 5200), (90, 120, 30)).save(buffer, format="JPEG", quality=50)
    kind, body = multipart("big.jpg", buffer.getvalue())
    assert len(body) < UPLOAD_MB * MiB
    with tally.case("HTTP decode budget", "5200x5200 JPEG") as mark:
        status, _, answer = exchange(
            port,
            raw_request(
                "POST", "/api/upload", "localhost", body=body, headers={"Content-Type": kind}
            ),
        )
        if status != 200 or json.loads(answer)["height"] > 1024:  # the native-size cap
            mark(WRONG, f"{status} {answer[:200]!r}")
    assert tally.bad("HTTP decode budget") == {}
