"""``deconvnet faithfulness`` and ``deconvnet dream`` end to end, on a real scan made with the
CLI (the faces' session scan of the default model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvnet.faces.cli import main

FAST = ["--steps", "4", "--random-seeds", "2"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test writes to the user's cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("DECONVNET_CACHE", str(folder))
    return folder


def test_cards_of_a_scan_rerun_its_values(
    scan_dir: Path, photos: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "faith"
    argv = [
        "faithfulness",
        "--scan",
        str(scan_dir),
        "--data",
        str(photos),
        "--maps",
        "2",
        "--k",
        "2",
    ]
    assert main([*argv, *FAST, "--out", str(out)]) == 0
    results = json.loads((out / "faithfulness.json").read_text())
    index = json.loads((scan_dir / "topk_index.json").read_text())
    values = {(e["layer"], e["map"], e["rank"]): e["value"] for e in index["entries"]}
    assert [(u["layer"], u["map"]) for u in results["units"]] == [
        ("features.4", 0),
        ("features.4", 1),
    ]
    for unit in results["units"]:
        assert len(unit["images"]) == 2 and (out / unit["figure"]).is_file()
        alone = json.loads((out / unit["document"]).read_text())
        assert alone["gain"] == unit["gain"] and alone["images"] == unit["images"]
        for rank, image in enumerate(unit["images"]):
            want = values[("features.4", unit["map"], rank)]
            assert image["scan_value"] == want
            for curve in image["curves"]["deletion/mean"].values():
                assert len(curve) == 5
                assert abs(curve[0] - want) <= 1e-5 * max(1.0, abs(want))
    assert results["layers"][0]["layer"] == "features.4" and results["layers"][0]["units"] >= 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "float32"  # the pixel orders: full precision
    assert set(manifest["files"]) == {
        "faithfulness.json",
        "faithfulness_layers.png",
        "cards/conv2_map0_faithfulness.png",
        "cards/conv2_map0_faithfulness.json",
        "cards/conv2_map1_faithfulness.png",
        "cards/conv2_map1_faithfulness.json",
    }
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == [
        "layer",
        "map",
        "images",
        "zeiler",
        "gain",
        "guided",
        "gain",
        "gradient",
        "gain",
    ]
    assert lines[2].split()[:3] == ["conv2", "0", "2/2"] and lines[-1] == str(
        out / "faithfulness_layers.png"
    )


def test_data_that_is_not_the_scanned_data_is_refused(
    scan_dir: Path, tmp_path: Path, capsys
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(other / "a.png")
    argv = ["faithfulness", "--scan", str(scan_dir), "--data", str(other), *FAST]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 1
    error = capsys.readouterr().err.strip()
    assert "not the data the scan read" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "o").exists()
    assert main(["faithfulness", "--scan", str(scan_dir), "--out", str(tmp_path / "p")]) == 1
    assert "--data" in capsys.readouterr().err


def test_too_much_work_is_refused_before_it_starts(
    scan_dir: Path, photos: Path, tmp_path: Path, capsys
) -> None:
    argv = ["faithfulness", "--scan", str(scan_dir), "--data", str(photos), "--max-work", "1000"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 1
    assert "--max-work" in capsys.readouterr().err


def test_cards_of_image_files_with_sanity_scores(
    photos: Path, tmp_path: Path, own_cache: Path, capsys
) -> None:
    photo = str(photos / "photo_0.png")
    argv = [
        "faithfulness",
        photo,
        "--layers",
        "conv2",
        "--map",
        "5",
        "--sanity",
        "--rules",
        "guided,gradient",
        *FAST,
    ]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    unit = json.loads((tmp_path / "a" / "faithfulness.json").read_text())["units"][0]
    assert unit["map"] == 5 and unit["images"][0]["scan_value"] is None
    sanity = unit["sanity"]
    assert set(sanity["steps"]) == {"guided", "gradient"} and not sanity["cached"]
    assert [s["randomised"] for s in sanity["steps"]["gradient"]] == [0, 1, 2]
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    again = json.loads((tmp_path / "b" / "faithfulness.json").read_text())["units"][0]
    assert again["sanity"]["cached"] and again["sanity"]["steps"] == sanity["steps"]
    assert again["cached"] and not unit["cached"]
    assert again["gain"] == unit["gain"] and again["images"] == unit["images"]
    assert len(list((own_cache / "sanity").glob("*.json"))) == 1
    assert len(list((own_cache / "faithfulness").glob("*.json"))) == 1


def test_dream_writes_images_and_reads_them_back_from_the_cache(
    scan_dir: Path, tmp_path: Path, own_cache: Path, capsys
) -> None:
    argv = ["dream", "--layer", "conv2", "--maps", "0,7", "--steps", "5", "--scan", str(scan_dir)]
    assert main([*argv, "--out", str(tmp_path / "d")]) == 0
    first = capsys.readouterr().out.splitlines()
    results = json.loads((tmp_path / "d" / "dream.json").read_text())
    index = json.loads((scan_dir / "topk_index.json").read_text())
    top1 = {r["map"]: r["max"] for r in index["stats"]["features.4"]}
    assert [u["map"] for u in results["units"]] == [0, 7]
    for unit, line in zip(results["units"], first, strict=False):
        assert unit["dataset_top1"] == top1[unit["map"]] and len(unit["trajectory"]) == 5
        assert unit["beats_dataset"] == (unit["centre"] > unit["dataset_top1"])
        picture = np.asarray(Image.open(tmp_path / "d" / unit["image_file"]))
        assert picture.shape == (32, 32, 3)
        assert line.startswith(f"conv2 map {unit['map']}: ") and "s]" in line
    assert first[2] == f"{results['summary']['above_dataset_top1']} of 2 above the dataset's top-1"
    assert main([*argv, "--out", str(tmp_path / "e")]) == 0
    second = capsys.readouterr().out.splitlines()
    assert all(line.endswith("[cached]") for line in second[:2])
    again = json.loads((tmp_path / "e" / "dream.json").read_text())
    assert [u["centre"] for u in again["units"]] == [u["centre"] for u in results["units"]]
    assert main([*argv, "--no-cache", "--out", str(tmp_path / "f")]) == 0
    assert "[cached]" not in capsys.readouterr().out


def test_dream_refuses_a_map_the_scan_did_not_track_and_too_much_work(
    tmp_path: Path, capsys
) -> None:
    assert main(["dream", "--layer", "conv2", "--map", "500", "--out", str(tmp_path / "a")]) == 1
    assert "map 500" in capsys.readouterr().err
    argv = [
        "dream",
        "--layer",
        "conv2",
        "--maps",
        "all",
        "--max-work",
        "100",
        "--out",
        str(tmp_path / "b"),
    ]
    assert main(argv) == 1
    assert "--max-work" in capsys.readouterr().err
