"""The unit page's sections (class selectivity, distribution): the same numbers on the page,
in ``units/<map>.json`` and from ``deconvnet units``, every JSON read back through its
schema, the layer page sorted by selectivity, and every unit page within its weight.

Oracle: the selectivity index and class means recomputed here from the scan's
``topk_index.json`` with the definition written out (not the library's function).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvnet.errors import InputError
from deconvnet.faces.cli import main
from deconvnet.faces.site.sections import read_unit
from deconvnet.figures.topk_index import read_index
from tests.faces.conftest import LABELLED_CLASSES, SCAN_LAYER, SCAN_SHOWN

MAX_PAGE_BYTES = 300 * 1024
"""A unit page with everything it loads (HTML, stylesheet, script, pictures)."""
ASSET = re.compile(r'(?:src|href)="([^"#]+)"')


def literal(document: dict, channel: int) -> tuple[list[float], float | None]:
    record = next(r for r in document["stats"][SCAN_LAYER] if r["map"] == channel)
    counts = document["labels"]["counts"]
    means = [s / c for s, c in zip(record["class_sums"], counts, strict=True)]
    top = max(means)
    rest = sorted(means)[:-1]
    mu_rest = sum(rest) / len(rest)
    return means, (top - mu_rest) / (top + mu_rest) if top + mu_rest > 0 else None


def test_unit_json_holds_the_literal_selectivity_and_the_page_shows_it(
    labelled_scan_dir: Path, labelled_site_dir: Path
) -> None:
    document = read_index(labelled_scan_dir)
    assert document["labels"]["names"] == list(LABELLED_CLASSES)
    assert document["labels"]["counts"] == list(LABELLED_CLASSES.values())
    units = labelled_site_dir / "layers" / SCAN_SHOWN / "units"
    checked = 0
    for channel in range(96):
        record = read_unit(units / f"{channel}.json")
        sections = {s["key"]: s for s in record["sections"]}
        assert list(sections) == ["selectivity", "distribution", "tuning", "circuits"]
        assert all(section["available"] for section in sections.values())
        means, index = literal(document, channel)
        selectivity = sections["selectivity"]
        assert selectivity["available"]
        assert selectivity["data"]["means"] == pytest.approx(means, rel=1e-12)
        if index is None:  # conv2 is before its ReLU: means may be <= 0, the index undefined
            assert selectivity["data"]["index"] is None
            continue
        assert selectivity["data"]["index"] == pytest.approx(index, rel=1e-9)
        assert (units.parent.parent.parent / selectivity["picture"]).is_file()
        assert sections["distribution"]["data"]["images"] == 12
        circuit = sections["circuits"]["data"]
        assert circuit["upstream_layer"] == "conv1" and len(circuit["upstream"]) == 5
        page = (units / f"{channel}.html").read_text()
        assert f"{index:.3f}" in page
        checked += 1
    assert checked > 40


def test_layer_page_lists_maps_by_selectivity(labelled_site_dir: Path) -> None:
    page = (labelled_site_dir / "layers" / SCAN_SHOWN / "index.html").read_text()
    found = [float(v) for v in re.findall(r'data-selectivity="([^"]+)"', page)]
    assert len(found) == 96  # undefined indices (-Infinity) last
    assert found == sorted(found, reverse=True)
    assert 'data-sort="selectivity" class="active"' in page


def test_unlabelled_scan_says_why_there_is_no_selectivity(site_dir: Path) -> None:
    record = read_unit(site_dir / "layers" / SCAN_SHOWN / "units" / "5.json")
    selectivity, histogram, tuned, circuit = record["sections"]
    assert tuned["available"] and not circuit["available"]
    assert "two scanned layers" in circuit["note"]
    assert not selectivity["available"] and "no class labels" in selectivity["note"]
    assert selectivity["picture"] is None
    assert histogram["available"] and histogram["data"]["images"] == 6
    page = (site_dir / "layers" / SCAN_SHOWN / "index.html").read_text()
    assert "data-selectivity" not in page


def test_every_unit_page_weighs_at_most_300_kb(labelled_site_dir: Path) -> None:
    heaviest = 0
    for page in (labelled_site_dir / "layers").rglob("units/*.html"):
        text = page.read_text()
        assets = {(page.parent / name).resolve() for name in ASSET.findall(text)}
        loaded = {a for a in assets if a.suffix in (".png", ".css", ".js")}
        heaviest = max(heaviest, len(text.encode()) + sum(a.stat().st_size for a in loaded))
    assert 0 < heaviest <= MAX_PAGE_BYTES


def test_units_command_prints_the_site_numbers(
    labelled_scan_dir: Path, labelled_site_dir: Path, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:  # fmt: skip
    assert main(["units", str(labelled_scan_dir), "--layer", "conv2", "--maps", "3-4,9"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [record["map"] for record in printed] == [3, 4, 9]
    for record in printed:
        site = read_unit(
            labelled_site_dir / "layers" / SCAN_SHOWN / "units" / f"{record['map']}.json"
        )
        for mine, theirs in zip(record["sections"], site["sections"], strict=True):
            assert mine["data"] == theirs["data"] and mine["picture"] is None
    out = tmp_path / "units"
    argv = [
        "units",
        str(labelled_scan_dir),
        "--layer",
        SCAN_LAYER,
        "--maps",
        "9",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    exported = read_unit(out / SCAN_SHOWN / "9.json")
    assert exported["sections"][0]["picture"] == f"{SCAN_SHOWN}/9_selectivity.png"
    assert (out / SCAN_SHOWN / "9_distribution.png").is_file()
    assert main(["units", str(labelled_scan_dir), "--layer", "conv3"]) == 1
    assert "holds layers conv1, conv2, not 'conv3'" in capsys.readouterr().err
    assert main(["units", str(labelled_scan_dir), "--layer", "conv2", "--maps", "96"]) == 1


def test_a_unit_record_that_breaks_its_schema_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "0.json"
    path.write_text(json.dumps({"format": "deconvnet-unit/1", "layer": "x", "layer_shown": "x",
                                "map": -1, "stats": {}, "sections": []}))  # fmt: skip
    with pytest.raises(InputError, match="map"):
        read_unit(path)
    path.write_text(json.dumps({"format": "other", "layer": "x", "layer_shown": "x", "map": 1,
                                "stats": {}, "sections": []}))  # fmt: skip
    with pytest.raises(InputError, match="format"):
        read_unit(path)


def test_circuits_refuse_data_other_than_the_scanned(
    labelled_scan_dir: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["site", str(labelled_scan_dir), "--data", str(photos), "--out", str(tmp_path / "s")]
    assert main(argv) == 1
    assert "--data is not the folder the scan was made from" in capsys.readouterr().err


def test_unit_page_tiles_are_light_copies_of_the_scan_tiles(labelled_site_dir: Path) -> None:
    page = (labelled_site_dir / "layers" / SCAN_SHOWN / "units" / "7.html").read_text()
    shown = re.findall(r'class="(?:projection|patch)" src="\.\./\.\./\.\./([^"]+)"', page)
    assert len(shown) == 6 and all(name.endswith(".jpg") for name in shown)
    for name in shown:
        light = np.asarray(Image.open(labelled_site_dir / name).convert("RGB"), dtype=float)
        exact = np.asarray(
            Image.open(labelled_site_dir / name.replace(".jpg", ".png")).convert("RGB")
        )
        assert light.shape == exact.shape
        assert np.abs(light - exact).mean() < 4  # JPEG quality 90: a few levels of 255
