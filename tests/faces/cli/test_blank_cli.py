"""``deconvnet project`` says when projections are blank and why (issue 23, item 4): in the
figure, the manifest and on stderr; ``topunits:k`` works on a (1, C, 1, 1) layer.

SqueezeNet's pool10 class units on the bundled cat photo: the zeiler signal of most of its
top five dies on the way down (the oracle for where is tests/instruments/test_signal.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from deconvnet.faces.cli import main

SQUEEZENET = ["--model", "squeezenet1_0", "--weights", "deep-compression", "--layer", "pool10"]


def test_blank_projections_are_explained_in_figure_manifest_and_stderr(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["project", *SQUEEZENET, "--select", "top:5", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "blank" in line]
    assert len(notes) == 1
    assert "projections are blank: the zeiler signal from pool10 is zero below fire" in notes[0]
    assert notes[0].endswith("--rule guided reaches the pixels")
    manifest = json.loads((out / "manifest.json").read_text())
    image = manifest["images"][0]
    blank = image["blank"]
    assert blank["projections"] and blank["other_rules_reaching"]["guided"] == len(
        blank["projections"]
    )
    assert all(place.startswith("fire") for place in blank["zero_below"].values())
    assert [p["blank"] for p in image["projections"]] == [
        k in blank["projections"] for k in range(5)
    ]
    assert blank["note"] in notes[0]
    from deconvnet.figures.style import WARNING_TEXT  # the colour the note is drawn in

    sheet = np.asarray(Image.open(out / image["sheet"]).convert("RGB"))
    warning = (np.abs(sheet[:80].astype(int) - WARNING_TEXT).sum(axis=2) < 30).sum()
    assert warning > 50  # the note is drawn under the title


def test_topunits_at_a_1x1_layer_projects_units(tmp_path) -> None:
    out = tmp_path / "out"
    argv = ["project", *SQUEEZENET, "--select", "topunits:3", "--rule", "guided"]
    assert main([*argv, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    records = manifest["images"][0]["projections"]
    assert [r["kind"] for r in records] == ["unit"] * 3
    assert [r["class_name"] for r in records][:1] == ["Egyptian cat"]
    assert not any(r["blank"] for r in records) and "blank" not in manifest["images"][0]
