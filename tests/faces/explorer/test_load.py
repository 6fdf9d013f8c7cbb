"""A bounded load test over loopback: 500 requests from 8 concurrent clients, mixed valid and
invalid, against uvicorn serving the explorer in this process. No 5xx; memory stable: the
resident set after the run is within :data:`RSS_GROWTH_MIB` of what it was after a
warm-up of :data:`WARM_UP` requests (the caches are bounded, so growth would be a leak).
"""

from __future__ import annotations

import io
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

CLIENTS = 8
REQUESTS = 500
WARM_UP = 100
RSS_GROWTH_MIB = 64
PAGE_BYTES = 4096


def resident_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * PAGE_BYTES / 2**20


def photo(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def requests_for(image_ids: list[str], count: int, seed: int) -> list[tuple[str, str, dict]]:
    """``(method, path, options)``: half valid, half bad in five different ways."""
    rng = random.Random(seed)
    layers = ["features.0", "features.4", "features.10"]
    plan = []
    for seed in range(count):
        image, layer = rng.choice(image_ids), rng.choice(layers)
        channel, rule = rng.randrange(48), rng.choice(["zeiler", "guided", "gradient"])
        unit = f"/api/images/{image}/layers/{layer}/units/{channel}"
        plan.append(
            rng.choice(
                [
                    ("GET", "/api/model", {}),
                    ("GET", f"/api/images/{image}/layers/{layer}/grid.png", {}),
                    ("GET", f"{unit}/projection.png?rule={rule}", {}),
                    ("GET", f"{unit}?rule={rule}&y=1&x=2", {}),
                    ("GET", f"/api/images/{image}/layers/nope", {}),
                    ("GET", f"{unit}?rule=magic", {}),
                    ("GET", "/api/images/ffffffffffffffff/input.png", {}),
                    ("GET", "/site/%2e%2e%2f%2e%2e%2fetc%2fpasswd", {}),
                    ("POST", "/api/upload", {"files": {"file": ("x.png", b"not an image")}}),
                    ("POST", "/api/upload", {"files": {"file": ("p.png", photo(seed % 4))}}),
                ]
            )
        )
    return plan


def run(base: str, plan: list[tuple[str, str, dict]]) -> Counter[int]:
    def one(chunk: list[tuple[str, str, dict]]) -> list[int]:
        with httpx.Client(base_url=base, timeout=60) as client:
            return [client.request(m, path, **extra).status_code for m, path, extra in chunk]

    chunks = [plan[number::CLIENTS] for number in range(CLIENTS)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        return Counter(code for codes in pool.map(one, chunks) for code in codes)


def test_500_mixed_requests_from_8_clients_give_no_5xx_and_stable_memory(live_server: str) -> None:
    with httpx.Client(base_url=live_server) as client:
        image_ids = [
            client.post("/api/upload", files={"file": ("p.png", photo(seed))}).json()["id"]
            for seed in range(4)
        ]
    warm = run(live_server, requests_for(image_ids, WARM_UP, seed=1))
    before = resident_mib()
    codes = warm + run(live_server, requests_for(image_ids, REQUESTS - WARM_UP, seed=2))
    growth = resident_mib() - before
    assert sum(codes.values()) == REQUESTS
    assert not [code for code in codes if code >= 500], codes
    assert codes[200] > REQUESTS // 3 and {404, 415, 422} <= set(codes), codes
    assert growth < RSS_GROWTH_MIB, f"resident memory grew {growth:.0f} MiB"
    print(f"load: {dict(sorted(codes.items()))}, RSS growth {growth:.1f} MiB")
