"""The live explorer in a real browser: upload a photo, click a map, see its projection,
toggle the rule, follow the link to the unit page. The projections are fetched again and
decoded to check they are not blank and differ. Screenshots go to the test's tmp folder."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.faces.conftest import SCAN_K, SCAN_SHOWN

CHANNEL = 5
WAIT_MS = 60_000


def picture(base: str, src: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(httpx.get(f"{base}{src}").content)))


def test_upload_click_toggle_and_follow_to_the_unit_page(
    browser, live_server: str, photos: Path, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live_server}/")
    page.wait_for_function("document.getElementById('layer').options.length > 0")
    page.select_option("#layer", SCAN_SHOWN)
    page.locator("#upload").set_input_files(str(photos / "photo_1.png"))
    page.wait_for_function(
        "() => { const g = document.getElementById('grid');"
        " return g.complete && g.naturalWidth > 0 && g.src.includes('/layers/conv2/'); }",
        timeout=WAIT_MS,
    )
    assert page.evaluate("document.getElementById('projection').getAttribute('src')") is None
    grid = page.locator("#grid")
    natural = page.evaluate("document.getElementById('grid').naturalWidth")
    box = grid.bounding_box()
    assert box is not None
    cell = (24 + 1) * box["width"] / natural  # maps of 24x24 plus 1 px padding, scaled
    grid.click(position={"x": (CHANNEL + 0.5) * cell, "y": 0.5 * cell})
    page.wait_for_function(
        "document.getElementById('projection').naturalWidth > 0", timeout=WAIT_MS
    )
    assert f"map {CHANNEL} at" in page.locator("#unit-note").inner_text()
    zeiler_src = page.get_attribute("#projection", "src")
    assert zeiler_src is not None and "rule=zeiler" in zeiler_src
    zeiler = picture(live_server, zeiler_src)
    assert zeiler.std() > 0, "the projection is blank"
    assert not page.locator("#box").is_hidden()
    page.screenshot(path=str(tmp_path / "explorer_zeiler.png"), full_page=True)
    page.click("#rules button[data-rule=guided]")
    page.wait_for_function(
        "document.getElementById('projection').src.includes('rule=guided')"
        " && document.getElementById('projection').complete",
        timeout=WAIT_MS,
    )
    guided = picture(live_server, page.get_attribute("#projection", "src") or "")
    assert guided.std() > 0 and not np.array_equal(guided, zeiler)
    assert page.locator("#topk li").count() == SCAN_K
    page.screenshot(path=str(tmp_path / "explorer_guided.png"), full_page=True)
    page.click("#unit-page")
    page.wait_for_url(f"**/site/layers/{SCAN_SHOWN}/units/{CHANNEL}.html")
    assert page.locator("img.projection").count() == SCAN_K
    loaded = "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    page.wait_for_function(loaded, timeout=WAIT_MS)
    page.screenshot(path=str(tmp_path / "unit_page.png"), full_page=True)
    assert errors == []
    page.close()


def test_squeezenet_menu_groups_fire_blocks_and_the_scan_link_opens_a_fire2_unit(
    browser, squeezenet_server: str, tmp_path: Path
) -> None:
    """SqueezeNet deep-compression: the menu holds fire2 … fire9 under their blocks, a fire
    layer's grid loads and a click projects; fire2's scan link opens its unit page."""
    base = squeezenet_server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base}/")
    page.wait_for_function("document.getElementById('layer').options.length > 0")
    groups = page.eval_on_selector_all(
        "#layer optgroup", "gs => gs.map(g => [g.label, g.querySelector('option').value])"
    )
    assert [f"fire{n}" for n in range(2, 10)] == [label for label, _ in groups]
    assert all(label == first for label, first in groups)  # the block's output leads it
    assert page.input_value("#layer") == "relu10"
    page.select_option("#library", "photo_1.png")
    grid_ready = (
        "() => { const g = document.getElementById('grid');"
        " return g.complete && g.naturalWidth > 0 && g.src.includes('/layers/{layer}/'); }"
    )
    page.wait_for_function(grid_ready.replace("{layer}", "relu10"), timeout=WAIT_MS)
    page.select_option("#layer", "fire5")
    page.wait_for_function(grid_ready.replace("{layer}", "fire5"), timeout=WAIT_MS)
    assert page.locator("#grid-note").inner_text().startswith("fire5: 256 maps of 27×27")
    grid = page.locator("#grid")
    box = grid.bounding_box()
    assert box is not None
    natural = page.evaluate("document.getElementById('grid').naturalWidth")
    cell = (27 + 1) * box["width"] / natural
    grid.click(position={"x": 2.5 * cell, "y": 0.5 * cell})
    page.wait_for_function(
        "document.getElementById('projection').naturalWidth > 0", timeout=WAIT_MS
    )
    assert page.locator("#unit-note").inner_text().startswith("fire5 map 2 at")
    assert picture(base, page.get_attribute("#projection", "src") or "").std() > 0
    assert page.locator("#topk-note").inner_text() == "the scan holds fire2, not fire5"
    page.screenshot(path=str(tmp_path / "squeezenet_fire5.png"), full_page=True)
    page.select_option("#layer", "fire2")
    page.wait_for_function(grid_ready.replace("{layer}", "fire2"), timeout=WAIT_MS)
    natural = page.evaluate("document.getElementById('grid').naturalWidth")
    cell = (55 + 1) * box["width"] / natural
    grid.click(position={"x": 0.5 * cell, "y": 0.5 * cell})  # map 0: scanned (--maps 3)
    page.wait_for_function(
        "!document.getElementById('unit-page').hidden", timeout=WAIT_MS
    )
    page.wait_for_function("document.querySelectorAll('#topk li img').length > 0")
    page.screenshot(path=str(tmp_path / "squeezenet_fire2_unit.png"), full_page=True)
    page.click("#unit-page")
    page.wait_for_url("**/site/layers/fire2/units/0.html")
    assert "fire2 · map 0" in page.locator("h1").inner_text()
    loaded = "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    page.wait_for_function(loaded, timeout=WAIT_MS)
    assert errors == []
    page.close()
