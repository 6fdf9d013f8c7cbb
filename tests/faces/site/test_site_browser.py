"""The static site in a real browser, from file:// with no server: every page loads with
no failed request, every picture decodes, every link leads to a page of the site, and the
layer page sorts. Screenshots go to the test's tmp folder."""

from __future__ import annotations

from pathlib import Path

from tests.faces.conftest import SCAN_K, SCAN_SHOWN

ALL_PICTURES_LOADED = (
    "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
)


def test_every_page_loads_its_pictures_and_links_from_file_urls(
    browser, site_dir: Path, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.on("pageerror", lambda error: failed.append(str(error)))
    pages = {p.resolve().as_uri() for p in site_dir.rglob("*.html")}
    linked: set[str] = set()
    for url in sorted(pages):
        page.goto(url)
        assert page.evaluate(ALL_PICTURES_LOADED), f"a broken picture on {url}"
        hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
        linked.update(href.split("#")[0] for href in hrefs)
    assert failed == []
    linked_pages = {href for href in linked if href.endswith(".html")}
    assert linked_pages == pages  # every page is reachable, none is missing
    pictures = linked - linked_pages  # each map's own picture, linked from its unit page
    assert pictures and all(href.endswith(".png") for href in pictures)
    assert all(Path(href.removeprefix("file://")).is_file() for href in pictures)
    unit = (site_dir / "layers" / SCAN_SHOWN / "units" / "5.html").as_uri()
    page.goto(unit)
    assert page.locator("img.projection").count() == SCAN_K
    assert page.locator("img.patch").count() == SCAN_K
    page.screenshot(path=str(tmp_path / "unit.png"), full_page=True)
    page.goto((site_dir / "index.html").as_uri())
    page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
    page.close()


def test_layer_page_sorts_by_max_activation(browser, site_dir: Path, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto((site_dir / "layers" / SCAN_SHOWN / "index.html").as_uri())
    order = "Array.from(document.querySelectorAll('#maps > li')).map(li => li.dataset.{})"
    assert page.evaluate(order.format("map")) == [str(c) for c in range(96)]
    page.click("button[data-sort=max]")
    maxima = [float(v) for v in page.evaluate(order.format("max"))]
    assert maxima == sorted(maxima, reverse=True)
    assert page.evaluate(order.format("map")) != [str(c) for c in range(96)]  # it moved
    page.screenshot(path=str(tmp_path / "layer_sorted.png"), full_page=True)
    page.close()
