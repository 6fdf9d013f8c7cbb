"""``deconvnet sanity`` end to end: the table on stdout equals the manifest's rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from deconvnet.faces.cli import main

TRAINED = ["--model", "default"]  # embedded weights: the same numbers on every run


def _photo(path: Path) -> Path:
    array = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def test_sanity_prints_the_table_it_writes_to_the_manifest(tmp_path, capsys):
    photo = _photo(tmp_path / "in.png")
    out = tmp_path / "san"
    argv = ["sanity", str(photo), *TRAINED, "--layer", "conv3", "--select", "top:1", "--seed", "0"]
    assert main([*argv, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    # conv3 (features.8) depends on conv1, conv2 and itself; the fc head lies above it
    assert manifest["randomised"] == ["features.8", "features.4", "features.0"]
    assert manifest["skipped"] == ["features.10", "classifier.1"]
    rows = manifest["rows"]
    assert [r["layers_randomised"] for r in rows] == [0, 1, 2, 3]
    assert [r["randomised_down_to"] for r in rows] == [None, *manifest["randomised"]]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["step", "randomised", "down", "to", "spearman", "ssim"]
    aliases = {None: "-", "features.8": "conv3", "features.4": "conv2", "features.0": "conv1"}
    # this seed kills the unit at some steps and not at others: both kinds of line are checked
    assert {r["status"] for r in rows} == {"ok", "unit inactive"}
    for row, line in zip(rows, lines[1:5], strict=True):
        words = line.split()
        assert words[:3] == [
            str(row["step"]),
            str(row["layers_randomised"]),
            aliases[row["randomised_down_to"]],
        ]
        assert [seed["spearman"] for seed in row["per_seed"]] == [row["spearman"]]  # K = 1
        if row["status"] == "unit inactive":
            assert row["spearman"] is None and row["ssim"] is None
            assert " ".join(words[3:]) == "unit inactive"
        else:
            assert row["status"] == "ok"
            assert words[3:5] == [f"{row['spearman']:.3f}", f"{row['ssim']:.3f}"]
            assert line.endswith(f"(same as step {row['step'] - 1})") == row["same_as_previous"]
    assert lines[5] == "left trained (conv3 does not depend on them): conv4, fc"
    assert lines[6] == str(out / "sanity.png")
    assert manifest["full_frame"] is False
    assert manifest["boxes"][0] is not None and len(manifest["boxes"][0]) == 4


def test_full_frame_figure_is_larger_than_the_zoomed_one(tmp_path):
    photo = _photo(tmp_path / "in.png")
    sizes = []
    for extra in ([], ["--full-frame"]):
        out = tmp_path / f"san{len(extra)}"
        argv = ["sanity", str(photo), *TRAINED, "--layer", "conv1", "--select", "top:1"]
        assert main([*argv, *extra, "--out", str(out)]) == 0
        assert json.loads((out / "manifest.json").read_text())["full_frame"] == bool(extra)
        with Image.open(out / "sanity.png") as image:
            sizes.append(image.size)
    assert sizes[1][0] > sizes[0][0]  # conv1 sees 5x5 pixels; the frame is 32x32
