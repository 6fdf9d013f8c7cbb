"""A small real top-k scan (the default model, a few generated photos) for the site and the
explorer: made once per session with the CLI, as a user would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvnet.faces.cli import main

SCAN_LAYER = "features.4"
"""conv2 of the default model: 96 maps of 16x16, all of them scanned."""
SCAN_SHOWN = "conv2"
"""How that layer is shown and addressed: its alias (URLs, file names, menus)."""
SCAN_K = 3
PHOTOS = 6


def make_photos(folder: Path, count: int = PHOTOS) -> Path:
    """Smooth random colour blobs with edges, 48x48 (the default model resizes to 32)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for number in range(count):
        base = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
        image = Image.fromarray(base).resize((48, 48), Image.Resampling.BICUBIC)
        pixels = np.asarray(image).copy()
        pixels[:, number * 7 : number * 7 + 4] = 255 * (number % 2)
        Image.fromarray(pixels).save(folder / f"photo_{number}.png")
    return folder


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def scan_dir(tmp_path_factory: pytest.TempPathFactory, photos: Path) -> Path:
    out = tmp_path_factory.mktemp("scan") / "scan"
    argv = ["topk", str(photos), "--layers", "conv2", "--maps", "all", "--k", str(SCAN_K)]
    code = main([*argv, "--workers", "0", "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def site_dir(tmp_path_factory: pytest.TempPathFactory, scan_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    assert main(["site", str(scan_dir), "--out", str(out)]) == 0
    return out


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by playwright (never a downloaded browser)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
