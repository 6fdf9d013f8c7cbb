"""The faithfulness card and the optimised image on unit pages (``deconvnet site --data
--optimise``): the section's numbers are the instruments' own on the scan's images, the
pictures resolve, a rebuild reads everything from the cache, bad requests are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deconvnet import models
from deconvnet.faces.cli import main
from deconvnet.faces.site.sections import read_unit
from deconvnet.inputs.datasets import open_dataset
from deconvnet.instruments import faithfulness as faith

K = 2


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("DECONVNET_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def small_scan(tmp_path_factory: pytest.TempPathFactory, photos: Path) -> Path:
    out = tmp_path_factory.mktemp("lens_scan") / "scan"
    argv = ["topk", str(photos), "--layers", "conv2", "--maps", "2", "--k", "3"]
    assert main([*argv, "--workers", "0", "--out", str(out)]) == 0
    return out


def _section(site: Path, channel: int, key: str) -> dict:
    document = read_unit(site / "layers" / "conv2" / "units" / f"{channel}.json")
    return next(s for s in document["sections"] if s["key"] == key)


def test_unit_pages_carry_the_card_and_the_optimised_image(
    small_scan: Path, photos: Path, tmp_path: Path, own_cache: Path
) -> None:
    site = tmp_path / "site"
    argv = [
        "site",
        str(small_scan),
        "--data",
        str(photos),
        "--cards",
        "--k",
        str(K),
        "--optimise",
        "list:1",
        "--optimise-steps",
        "16",
    ]
    assert main([*argv, "--out", str(site)]) == 0
    index = json.loads((small_scan / "topk_index.json").read_text())
    model = models.load("default")
    dataset = open_dataset(photos, model.preprocessing)
    for channel in (0, 1):
        card = _section(site, channel, "faithfulness")
        assert card["available"] and (site / card["picture"]).is_file()
        images = faith.scan_images(index["entries"], dataset, "features.4", channel, K)
        want = faith.faithfulness_card(model, "features.4", channel, images)
        for perturbation, gains in want.gain.items():
            assert card["data"]["gain"][perturbation] == pytest.approx(gains, rel=1e-9)
        assert [i["scan_value"] for i in card["data"]["images"]] == [i.expected for i in images]
        assert not card["data"]["cached"]
        page = (site / "layers" / "conv2" / "units" / f"{channel}.html").read_text()
        assert "Which lens to trust" in page and "The unit&#39;s optimised image" in page
    dreamt = _section(site, 1, "dream")
    assert dreamt["available"] and (site / dreamt["picture"]).is_file()
    top1 = next(s["max"] for s in index["stats"]["features.4"] if s["map"] == 1)
    assert dreamt["data"]["dataset_top1"] == top1 and len(dreamt["data"]["trajectory"]) == 16
    assert not _section(site, 0, "dream")["available"]
    # rebuilt: every card and image comes from the cache
    again = tmp_path / "again"
    assert main([*argv, "--out", str(again)]) == 0
    assert _section(again, 0, "faithfulness")["data"]["cached"]
    assert _section(again, 1, "dream")["data"]["cached"]
    assert _section(again, 1, "dream")["data"]["compared"] == dreamt["data"]["compared"]
    assert len(list((own_cache / "faithfulness").glob("*.json"))) == 2


def test_bad_lens_requests_are_one_line_before_any_work(
    small_scan: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["site", str(small_scan), "--out", str(tmp_path / "s")]
    assert main([*base, "--sanity"]) == 1
    err = capsys.readouterr().err
    assert "--sanity needs --cards" in err
    assert main([*base, "--cards"]) == 1
    assert "--cards needs --data" in capsys.readouterr().err
    assert main([*base, "--optimise", "list:7"]) == 1
    assert "names none of the scan's maps" in capsys.readouterr().err
    assert main([*base, "--data", str(photos), "--cards", "--max-work", "100"]) == 1
    err = capsys.readouterr().err
    assert "--max-work" in err and len(err.strip().splitlines()) == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.png").write_bytes((photos / "photo_0.png").read_bytes())
    assert main([*base, "--data", str(other)]) == 1
    err = capsys.readouterr().err
    assert "--data" in err and "scan" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s" / "index.html").exists()
