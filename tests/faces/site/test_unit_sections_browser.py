"""The unit page's four sections in a real browser from file://: every chart decodes,
every circuit link opens a unit page of the site, the layer page sorts by selectivity.
Screenshots go to the test's tmp folder."""

from __future__ import annotations

from pathlib import Path

from tests.faces.conftest import SCAN_SHOWN
from tests.faces.site.test_site_browser import ALL_PICTURES_LOADED, watched_page

SECTIONS = ["selectivity", "distribution", "tuning", "circuits"]


def test_unit_page_shows_four_sections_and_circuit_links_open(
    browser, labelled_site_dir: Path, tmp_path: Path
) -> None:
    page, failed = watched_page(browser)
    page.goto((labelled_site_dir / "layers" / SCAN_SHOWN / "units" / "7.html").as_uri())
    shown = page.eval_on_selector_all("section[data-section]", "s => s.map(x => x.dataset.section)")
    assert shown == SECTIONS
    assert page.locator("section[data-section] img.chart").count() == 4
    assert page.evaluate(ALL_PICTURES_LOADED)
    page.screenshot(path=str(tmp_path / "unit_sections.png"), full_page=True)
    links = page.eval_on_selector_all("#circuits a", "links => links.map(a => a.href)")
    assert links, "conv2 map 7 links to the conv1 maps feeding it"
    for href in links:
        page.goto(href)
        assert page.title().startswith("conv1 map")
        assert page.evaluate(ALL_PICTURES_LOADED)
    assert failed == []
    page.goto((labelled_site_dir / "layers" / SCAN_SHOWN / "index.html").as_uri())
    order = "Array.from(document.querySelectorAll('#maps > li')).map(li => li.dataset.{})"
    first = page.evaluate(order.format("selectivity"))
    page.click("button[data-sort=map]")
    assert page.evaluate(order.format("map")) == [str(c) for c in range(96)]
    page.click("button[data-sort=selectivity]")
    assert page.evaluate(order.format("selectivity")) == first
    page.screenshot(path=str(tmp_path / "layer_by_selectivity.png"), full_page=True)
    page.close()
