"""Named weight sets: fetched from a loopback HTTP server only (no real network)."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import deconvnet.models as zoo
from deconvnet.errors import WeightsError
from deconvnet.models._download import fetch
from deconvnet.models._meta import CIFAR10_CATEGORIES
from deconvnet.models.default import CIFAR10_PREPROCESSING

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # > 1 MiB: several chunks, several callbacks
TRICKLE_PAUSE_S = 0.15  # longer than the 0.1 s between progress reports


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_fetch_downloads_verifies_and_reports_progress(
    server: tuple[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    base, root = server
    (root / "w.bin").write_bytes(PAYLOAD)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    calls: list[tuple[int, int | None]] = []
    cache = tmp_path / "cache"
    path = fetch(f"{base}/w.bin", "w.bin", digest, progress=lambda d, t: calls.append((d, t)),
                 directory=cache)
    assert path == cache / "w.bin" and path.read_bytes() == PAYLOAD
    assert calls[0] == (0, len(PAYLOAD)) and calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert [p.name for p in cache.iterdir()] == ["w.bin"]  # no partial files left
    assert capfd.readouterr().err == ""  # the models room draws nothing (torch.hub's bar off)


def test_fetch_goes_through_torch_hub(
    server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, root = server
    (root / "w.bin").write_bytes(PAYLOAD)
    seen: list[dict[str, object]] = []
    real = torch.hub.download_url_to_file

    def spy(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        seen.append({"url": url, "hash_prefix": hash_prefix, "progress": progress})
        real(url, dst, hash_prefix, progress)

    monkeypatch.setattr(torch.hub, "download_url_to_file", spy)
    prefix = hashlib.sha256(PAYLOAD).hexdigest()[:8].upper()  # case does not matter
    assert fetch(f"{base}/w.bin", "w.bin", prefix, directory=tmp_path).read_bytes() == PAYLOAD
    assert seen == [{"url": f"{base}/w.bin", "hash_prefix": prefix.lower(), "progress": False}]


class TricklingHandler(http.server.BaseHTTPRequestHandler):
    """Sends PAYLOAD in four pieces, 0.15 s apart; ``/unsized`` without Content-Length."""

    def log_message(self, fmt: str, *args: object) -> None:
        pass

    def _headers(self) -> None:
        self.send_response(200)
        if self.path != "/unsized":
            self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()

    def do_HEAD(self) -> None:
        self._headers()

    def do_GET(self) -> None:
        self._headers()
        piece = len(PAYLOAD) // 4 + 1
        for start in range(0, len(PAYLOAD), piece):
            self.wfile.write(PAYLOAD[start : start + piece])
            self.wfile.flush()
            time.sleep(TRICKLE_PAUSE_S)
        self.close_connection = True


@pytest.fixture
def trickling() -> Iterator[str]:
    """Base URL of a slow loopback server, so progress is reported while bytes arrive."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TricklingHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_progress_is_reported_while_bytes_arrive(trickling: str, tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    fetch(f"{trickling}/w.bin", "w.bin", None, progress=lambda d, t: calls.append((d, t)),
          directory=tmp_path)
    assert {t for _, t in calls} == {len(PAYLOAD)}
    assert any(0 < d < len(PAYLOAD) for d, _ in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_unknown_size_is_reported_as_none_until_the_end(trickling: str, tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    path = fetch(f"{trickling}/unsized", "u.bin", None,
                 progress=lambda d, t: calls.append((d, t)), directory=tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert calls[0] == (0, None) and calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert all(t is None for _, t in calls[:-1])


def test_a_failing_progress_callback_stops_the_fetch(trickling: str, tmp_path: Path) -> None:
    class Stop(Exception):
        pass

    def progress(done: int, total: int | None) -> None:
        if done > 0:
            raise Stop

    with pytest.raises(Stop):
        fetch(f"{trickling}/w.bin", "w.bin", None, progress=progress, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_accepts_a_digest_prefix_and_reuses_the_cache(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = server
    (root / "w.bin").write_bytes(PAYLOAD)
    prefix = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    first = fetch(f"{base}/w.bin", "w.bin", prefix, directory=tmp_path)
    (root / "w.bin").unlink()  # the server no longer has it: the cache must answer
    assert fetch(f"{base}/w.bin", "w.bin", prefix, directory=tmp_path) == first


def test_sha_mismatch_saves_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    (root / "w.bin").write_bytes(PAYLOAD)
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match=r"wrong sha256 .*expected \"00000000"):
        fetch(f"{base}/w.bin", "w.bin", "0" * 64, directory=cache)
    assert list(cache.iterdir()) == []


def test_corrupt_cached_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"truncated")
    with pytest.raises(WeightsError, match="delete it and try again"):
        fetch("http://127.0.0.1:9/w.bin", "w.bin", "0" * 64, directory=tmp_path)


def test_offline_message_says_what_to_download_and_where(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/alexnet.pth"
    with pytest.raises(WeightsError) as err:
        fetch(url, "alexnet.pth", "7be5be79", directory=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert f"could not download {url}" in message
    assert f"save it as {tmp_path / 'alexnet.pth'}" in message
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_a_weights_error(server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(WeightsError, match=r"could not download .*absent\.pth"):
        fetch(f"{base}/absent.pth", "absent.pth", None, directory=tmp_path)


def test_too_short_prefix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="too short"):
        fetch("http://127.0.0.1:9/x", "x", "abc", directory=tmp_path)


def test_load_named_set_through_the_hub_cache(
    server: tuple[str, Path], hub_dir: Path, tmp_path: Path
) -> None:
    base, root = server
    source = zoo.load("default", weights="random", seed=5)
    torch.manual_seed(0)
    for parameter in source.parameters():
        parameter.data.normal_()
    torch.save(source.state_dict(), root / "tiny.pth")
    digest = hashlib.sha256((root / "tiny.pth").read_bytes()).hexdigest()
    served = zoo.Weights(
        name="served", url=f"{base}/tiny.pth", sha256=digest, file_name="tiny-test.pth",
        preprocessing=CIFAR10_PREPROCESSING, categories=CIFAR10_CATEGORIES,
        provenance="test", licence="MIT", num_params=378_538,
    )
    seen: list[tuple[int, int | None]] = []
    model = zoo.load("default", weights=served, progress=lambda d, t: seen.append((d, t)))
    assert (hub_dir / "tiny-test.pth").is_file()
    assert seen[-1][0] == seen[-1][1] == (root / "tiny.pth").stat().st_size
    assert model.categories == CIFAR10_CATEGORIES
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 source.state_dict().values(), strict=True))
