"""The tuning and circuit figures: a PNG and a JSON each, the JSON holding the numbers the
instruments returned, the best grating written as it was fed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvnet.figures.circuits import circuit_figure, save_circuit
from deconvnet.figures.tuning import save_tuning, tuning_figure
from deconvnet.instruments import tuning as T
from deconvnet.instruments.circuits import Link, UnitCircuit


def _unit() -> T.UnitTuning:
    shown = T.stimuli((32, 32), 15)
    curve = tuple(float(np.cos(np.radians(2 * a)) + 1) for a in shown.orientations)
    return T.UnitTuning(
        layer="conv2",
        channel=7,
        size=shown.size,
        orientations=shown.orientations,
        curve=curve,
        preferred_orientation=0.0,
        preferred_period=shown.periods[2],
        preferred_frequency=1 / shown.periods[2],
        osi=0.5,
        best_grating=(0, 2, 1),
        best_phase=shown.phases[1],
        best_response=2.0,
        preferred_colour=(0, 255, 0),
        preferred_colour_hsv=(120.0, 1.0, 1.0),
        colour_response=1.5,
        hues=tuple(15.0 * h for h in range(24)),
        hue_curve=tuple(float(np.sin(np.radians(15 * h))) for h in range(24)),
    )


def test_tuning_figure_and_files(tmp_path: Path) -> None:
    unit = _unit()
    picture = tuning_figure(unit)
    assert picture.dtype == np.uint8 and picture.shape[2] == 3 and picture.std() > 10
    files = save_tuning(unit, tmp_path, "conv2_7_tuning")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files.values())
    data = json.loads((tmp_path / files["json"]).read_text())
    assert data["osi"] == 0.5 and data["orientation_curve"] == pytest.approx(list(unit.curve))
    assert data["preferred_colour_rgb"] == [0, 255, 0] and data["files"] == files
    grating = np.asarray(Image.open(tmp_path / files["grating"]))
    assert np.array_equal(grating, T.stimuli((32, 32), 15).grating(0, 2, 1))


def test_circuit_figure_and_files(tmp_path: Path) -> None:
    circuit = UnitCircuit(
        layer="conv4",
        channel=3,
        rule="zeiler",
        upstream_layer="conv3",
        upstream=(Link(5, 2.0, 0.4), Link(9, 1.0, 0.2), Link(2, -0.5, -0.1)),
        downstream_layer=None,
        downstream=(),
        activation=2.5,
        rest=0.0,
        images=9,
    )
    picture = circuit_figure(circuit)
    assert picture.dtype == np.uint8 and picture.std() > 10
    files = save_circuit(circuit, tmp_path, "conv4_3_circuit")
    data = json.loads((tmp_path / files["json"]).read_text())
    assert [link["map"] for link in data["upstream"]] == [5, 9, 2]
    assert data["downstream_layer"] is None and data["images"] == 9
    assert Image.open(tmp_path / files["png"]).size[0] == picture.shape[1]


def test_a_map_flat_fields_do_not_drive_has_no_preferred_colour(tmp_path: Path) -> None:
    import torch

    shown = T.stimuli((32, 32), 15)
    gratings = torch.rand(
        1, 16, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    layer = T.LayerTuning(
        "fire5", torch.tensor([10]), shown, gratings, torch.zeros(1, 144, dtype=torch.float64)
    )
    unit = layer.unit(10)
    assert unit.preferred_colour is None and unit.preferred_colour_hsv is None
    assert unit.colour_response == 0.0
    files = save_tuning(unit, tmp_path, "flat")
    assert json.loads((tmp_path / files["json"]).read_text())["preferred_colour_rgb"] is None
