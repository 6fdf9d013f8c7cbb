"""The static site of a top-k scan: pages, links, pictures and numbers, read from the HTML.

Oracles: the scan's own topk_index.json (what each unit page must show) and the files on
disk (every link and picture must resolve inside the site); statistics are formatted to 4
significant digits on the pages, so they are compared at that precision.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest

from deconvnet.faces.cli import main
from deconvnet.faces.site.build import Unit, build_site, slug, unit_url, units_by_layer
from tests.faces.conftest import SCAN_K, SCAN_LAYER, SCAN_SHOWN


class Page(HTMLParser):
    """Links, pictures (with their class) and text of one page."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[tuple[str, str]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("href"):
            self.links.append(str(found["href"]))
        if tag == "img":
            self.images.append((str(found.get("src")), str(found.get("class") or "")))
        if tag in ("script", "link") and (found.get("src") or found.get("href")):
            self.scripts.append(str(found.get("src") or found.get("href")))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def index_document(scan_dir: Path) -> dict:
    return json.loads((scan_dir / "topk_index.json").read_text())


def test_every_link_and_picture_resolves_inside_the_site(site_dir: Path) -> None:
    pages = sorted(site_dir.rglob("*.html"))
    assert len(pages) == 1 + 1 + 96  # index, one layer, every map of conv2
    root = site_dir.resolve()
    for page in pages:
        parsed = Page(page)
        for reference in parsed.links + [src for src, _ in parsed.images] + parsed.scripts:
            url = urlparse(reference)
            assert not url.scheme and not url.netloc, f"{page}: {reference} leaves the site"
            target = (page.parent / url.path).resolve()
            assert target.is_relative_to(root) and target.is_file(), f"{page}: {reference}"


def test_unit_page_shows_k_projections_beside_k_patches_with_the_scan_values(
    site_dir: Path, scan_dir: Path
) -> None:
    document = index_document(scan_dir)
    page_file = site_dir / unit_url(SCAN_SHOWN, 5)
    assert page_file == site_dir / "layers" / "conv2" / "units" / "5.html"
    page = Page(page_file)
    kinds = [cls for _, cls in page.images]
    assert kinds.count("projection") == SCAN_K and kinds.count("patch") == SCAN_K
    text = " ".join(page.text)
    entries = [e for e in document["entries"] if e["layer"] == SCAN_LAYER and e["map"] == 5]
    for entry in entries:
        assert f"{entry['value']:.4g}" in text
        assert Path(entry["image"]).name in text
    stats = next(s for s in document["stats"][SCAN_LAYER] if s["map"] == 5)
    assert f"{stats['mean']:.4g}" in text and f"of {stats['images']} images" in text
    assert f"{100 * stats['fire_rate']:.1f}%" in text


def test_layer_page_lists_every_map_with_its_top_patch_and_sort_keys(
    site_dir: Path, scan_dir: Path
) -> None:
    document = index_document(scan_dir)
    html = (site_dir / "layers" / slug(SCAN_SHOWN) / "index.html").read_text()
    for record in document["stats"][SCAN_LAYER]:
        assert f'data-map="{record["map"]}" data-max="{record["max"]}"' in html
    top_patches = [e["patch_file"] for e in document["entries"] if e["rank"] == 0]
    assert len(top_patches) == 96
    assert all(f'src="../../{name}"' in html for name in top_patches)


def test_index_is_a_model_card_with_receptive_fields_and_provenance(
    site_dir: Path, scan_dir: Path
) -> None:
    text = " ".join(Page(site_dir / "index.html").text)
    manifest = json.loads((scan_dir / "manifest.json").read_text())
    assert manifest["weights_sha256"] in text
    assert index_document(scan_dir)["dataset_fingerprint"] in text
    # the default model's conv2: 96x16x16, receptive field 15x15 at stride 2 (see `layers`)
    assert "96x16x16" in text and "15x15, stride 2" in text
    # the precision asked for and what each tile ran in, counted from the index's entries
    ran = Counter(e["precision"] for e in index_document(scan_dir)["entries"])
    summary = f"{manifest['precision']} (ran: " + ", ".join(f"{n} × {c}" for n, c in ran.items())
    summary += ")"
    assert manifest["precision"] == "auto" and len(ran) == 1
    assert summary in text
    assert json.loads((site_dir / "manifest.json").read_text())["precision"] == summary


def test_dead_maps_are_the_ones_that_never_fired() -> None:
    document = {
        "entries": [],
        "stats": {
            "conv": [{"map": 0, "fire_rate": 0.0, "max": -1.0}, {"map": 1, "fire_rate": 0.5}]
        },
    }
    units = units_by_layer(document)["conv"]
    assert [u.dead for u in units] == [True, False]
    assert Unit("conv", 2, {"fire_rate": None}, []).dead


def test_site_refuses_a_folder_without_a_scan_and_other_weights(
    tmp_path: Path, scan_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["site", str(tmp_path / "empty"), "--out", str(tmp_path / "site")]) == 1
    assert "topk_index.json" in capsys.readouterr().err
    other = tmp_path / "other.pth"
    import torch

    from deconvnet import models

    model = models.load("default")
    torch.save({k: v + 1 for k, v in model.state_dict().items()}, other)
    argv = ["site", str(scan_dir), "--weights", str(other), "--out", str(tmp_path / "s2")]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert "weights differ" in error and len(error.strip().splitlines()) == 1


def test_an_index_without_map_pictures_builds(scan_dir: Path, tmp_path: Path) -> None:
    """``map_file`` is optional in the index's schema: unit pages then omit the link (it
    was a template error, found by the hostile index variants)."""
    scan = tmp_path / "scan"
    shutil.copytree(scan_dir, scan)
    document = index_document(scan)
    for entry in document["entries"]:
        entry.pop("map_file", None)
    (scan / "topk_index.json").write_text(json.dumps(document))
    result = build_site(scan, tmp_path / "site")
    page = next(iter(result.units.values()))[0].read_text()
    assert "this map's picture" not in page and 'class="projection"' in page


def test_a_relative_site_folder_builds(
    scan_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--out site`` relative to the working directory: the pages' tile names were taken
    relative to it from resolved paths (a ValueError traceback)."""
    monkeypatch.chdir(tmp_path)
    result = build_site(scan_dir, Path("site"))
    unit_page = next(iter(result.units.values()))[0]
    tiles = re.findall(r'src="([^"]*tiles/[^"]+\.jpg)"', unit_page.read_text())
    assert tiles and all((tmp_path / unit_page.parent / tile).is_file() for tile in tiles)
