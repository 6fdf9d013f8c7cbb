"""The explorer over the default model and the session's scan, as an app and as a server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the explorer extra is not installed")
import uvicorn

from deconvnet import models
from deconvnet.engine.receptive import layer_table
from deconvnet.faces.cli import main
from deconvnet.faces.explorer.app import create_app
from deconvnet.faces.explorer.session import Explorer
from deconvnet.faces.site.build import build_site

STARTUP_SECONDS = 30
LOCAL = "http://127.0.0.1"
"""Base URL of test clients: the explorer answers only requests for its own address."""
SQUEEZENET = ["--model", "squeezenet1_0", "--weights", "deep-compression"]
SQUEEZENET_SCAN_K = 2
SQUEEZENET_SCANNED_MAPS = 3


@pytest.fixture(scope="session")
def default_model():
    return models.load("default")


def make_explorer(model, photos: Path) -> Explorer:
    return Explorer(
        model, model.preprocessing, name="default", aliases=model.layer_aliases, images_dir=photos
    )


@pytest.fixture(scope="session")
def served_site(tmp_path_factory: pytest.TempPathFactory, scan_dir: Path, default_model) -> Path:
    rows = layer_table(default_model, (1, 3, 32, 32))
    out = tmp_path_factory.mktemp("served_site")
    return build_site(scan_dir, out, layer_rows=rows, input_size=(32, 32)).index.parent


@pytest.fixture(scope="session")
def app(default_model, photos: Path, scan_dir: Path, served_site: Path):
    return create_app(make_explorer(default_model, photos), scan_dir=scan_dir, site_dir=served_site)


def addressed_locally(app):
    """``app`` seen through a client on the explorer's own address: every request's ``Host``
    is the loopback one (for tools that send their own, like schemathesis's ``testserver``)."""

    async def local(scope, receive, send):
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
            scope = {**scope, "headers": [*headers, (b"host", b"127.0.0.1")]}
        await app(scope, receive, send)

    return local


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def squeezenet():
    return models.load("squeezenet1_0", "deep-compression")


@pytest.fixture(scope="session")
def squeezenet_scan(tmp_path_factory: pytest.TempPathFactory, photos: Path) -> Path:
    """A real SqueezeNet scan of fire2 (a Fire container: its concatenated output)."""
    out = tmp_path_factory.mktemp("squeezenet_scan") / "scan"
    argv = ["topk", str(photos), *SQUEEZENET, "--layers", "fire2"]
    options = ["--maps", str(SQUEEZENET_SCANNED_MAPS), "--k", str(SQUEEZENET_SCAN_K)]
    assert main([*argv, *options, "--workers", "0", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def squeezenet_app(squeezenet, squeezenet_scan: Path, photos: Path, tmp_path_factory):
    """The explorer over SqueezeNet deep-compression with its scan's site, as ``serve``
    builds it."""
    site = build_site(
        squeezenet_scan,
        tmp_path_factory.mktemp("squeezenet_site"),
        layer_rows=layer_table(squeezenet, (1, 3, 227, 227)),
        input_size=(227, 227),
        aliases=squeezenet.layer_aliases,
    ).index.parent
    explorer = Explorer(
        squeezenet, squeezenet.preprocessing, name="squeezenet1_0", images_dir=photos
    )
    return create_app(explorer, scan_dir=squeezenet_scan, site_dir=site)


@pytest.fixture(scope="session")
def live_server(app) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread; its base URL."""
    yield from serve(app)


@pytest.fixture(scope="session")
def squeezenet_server(squeezenet_app) -> Iterator[str]:
    yield from serve(squeezenet_app)


def serve(app) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the explorer did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_SECONDS)
