"""Projection pictures: receptive-field crops, equal tiles, display views, Jupyter, save.

Oracles: the receptive-field arithmetic of ``receptive_fields`` (traced independently of
the figure code), the projection tensors themselves, and literal colour expectations of
each view (zero white in ``signed``, black in ``heat``).
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deconvnet as dn
from deconvnet.engine.receptive import receptive_fields
from deconvnet.figures.projection import FigureOptions, projection_figure
from deconvnet.figures.style import OUTSIDE_IMAGE
from deconvnet.inputs.preprocessing import Preprocessing
from tests import _nets

SIZE = 227


def _result(
    select: dn.Selection | None = None, seed: int = 0
) -> tuple[torch.nn.Module, torch.Tensor, dn.Projection]:
    model = _nets.caffenet(width=8)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    with dn.Deconvnet(model) as net:
        return model, x, net.project(x, layer="8", select=select or dn.TopMaps(5))


def _rgb(colour: tuple[int, int, int] = (10, 200, 30)) -> np.ndarray:
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (SIZE, SIZE, 3)).copy()


def test_crops_are_the_full_receptive_field_boxes_and_hold_the_projection() -> None:
    model, x, res = _result()
    field = receptive_fields(model, tuple(x.shape))["8"]
    figure = projection_figure(res, receptive_field=field, input_rgb=_rgb())
    assert res.positions is not None
    for k, crop in enumerate(figure.crops):
        y, x_ = (int(p) for p in res.positions[0, k])
        assert crop == field.box(y, x_)  # unclipped: border fields keep their full size
        assert figure.records[k]["crop_box"] == list(crop)
        clipped = field.box(y, x_, (SIZE, SIZE))
        outside = res.images[0, k].clone()
        outside[:, clipped[0] : clipped[2], clipped[1] : clipped[3]] = 0
        assert float(outside.abs().max()) == 0.0  # zeiler, no bias: nothing lands outside
    sizes = {picture.shape for picture in figure.files}
    assert len(sizes) == 1  # every unit's picture has the full field's size


def test_border_fields_are_padded_grey_where_they_leave_the_image() -> None:
    model, x, res = _result(dn.Neuron(0, 0, 0))
    field = receptive_fields(model, tuple(x.shape))["8"]
    figure = projection_figure(res, receptive_field=field, input_rgb=_rgb())
    top, left, bottom, _ = figure.crops[0]
    assert top < 0 and left < 0  # the corner unit's field reaches past the border
    picture = figure.files[0]
    factor = picture.shape[0] // (bottom - top)
    assert tuple(picture[0, 0]) == OUTSIDE_IMAGE
    inside = picture[(-top) * factor, (-left) * factor]
    assert tuple(inside) != OUTSIDE_IMAGE  # zero is mid-grey 128, never the padding grey
    assert picture.shape[0] >= 128 and picture.shape[0] % (bottom - top) == 0


def test_sheet_tiles_are_equal_and_rows_have_no_empty_slots_but_the_last() -> None:
    for count in (1, 2, 5, 9):
        _, _, res = _result(dn.TopMaps(count))
        figure = projection_figure(res, input_rgb=_rgb(), options=FigureOptions(tile=96))
        boxes = [box for pair in figure.tile_boxes for box in pair]
        assert {(b[2] - b[0], b[3] - b[1]) for b in boxes} == {(96, 96)}
        tops = sorted({pair[1][0] for pair in figure.tile_boxes})
        columns = math.ceil(math.sqrt(count))
        assert len(tops) == math.ceil(count / columns)
        per_row = [sum(1 for p in figure.tile_boxes if p[1][0] == t) for t in tops]
        assert all(n == columns for n in per_row[:-1]) and 1 <= per_row[-1] <= columns
        bottom = max(b[2] for b in boxes)
        assert figure.sheet.shape[0] - bottom < 120  # only captions and a note below


def test_sheet_shows_each_projection_tile_exactly() -> None:
    _, _, res = _result(dn.TopMaps(2))
    figure = projection_figure(res, input_rgb=_rgb(), options=FigureOptions(tile=80))
    for k, (_, projection_box) in enumerate(figure.tile_boxes):
        top, left, bottom, right = projection_box
        source = figure.pictures[k]
        resample = Image.Resampling.NEAREST if source.shape[0] <= 80 else Image.Resampling.LANCZOS
        expected = np.asarray(Image.fromarray(source).resize((80, 80), resample))
        assert np.array_equal(figure.sheet[top:bottom, left:right], expected)
        factor = figure.files[k].shape[0] // source.shape[0]
        assert np.array_equal(figure.files[k], source.repeat(factor, 0).repeat(factor, 1))


def test_tile_contrast_stretches_every_tile_and_shared_keeps_their_ratio() -> None:
    _, _, res = _result(dn.TopMaps(4))
    own = projection_figure(res, input_rgb=_rgb(), options=FigureOptions(contrast="tile"))
    shared = projection_figure(res, input_rgb=_rgb(), options=FigureOptions(contrast="shared"))
    peaks = res.images[0].abs().amax(dim=(1, 2, 3))
    strongest = int(peaks.argmax())
    weakest = int(peaks.argmin())
    assert float(peaks[weakest]) < 0.9 * float(peaks[strongest])
    for picture in own.files:  # rgb view: largest |x| reaches 1 or 255
        assert int(np.abs(picture.astype(int) - 128).max()) == 127
    assert int(np.abs(shared.files[strongest].astype(int) - 128).max()) == 127
    assert int(np.abs(shared.files[weakest].astype(int) - 128).max()) < 127


def test_views_have_their_documented_zero() -> None:
    _, _, res = _result(dn.TopMaps(1))
    values = res.images[0, 0]
    figure = projection_figure(res, input_rgb=_rgb(), options=FigureOptions(display="signed"))
    crop = figure.crops[0]
    inside = values[:, max(crop[0], 0) : crop[2], max(crop[1], 0) : crop[3]]
    zeros = torch.nonzero(inside.abs().sum(0) == 0)
    assert zeros.numel() > 0
    zero_spot = (
        int(zeros[0, 0]) + max(crop[0], 0) - crop[0],
        int(zeros[0, 1]) + max(crop[1], 0) - crop[1],
    )
    signed = figure.files[0]
    factor = signed.shape[0] // (crop[2] - crop[0])
    y, x = zero_spot[0] * factor, zero_spot[1] * factor
    assert signed[y, x].min() > 240  # white
    heat = projection_figure(res, input_rgb=_rgb(), options=FigureOptions(display="heat")).files[0]
    assert heat[y, x].max() < 10  # inferno's black
    overlay = projection_figure(
        res, input_rgb=_rgb(), options=FigureOptions(display="overlay")
    ).files[0]
    grey = np.mean((10, 200, 30))
    assert np.allclose(overlay[y, x], 255 - 0.6 * (255 - grey), atol=1)


def test_joint_selections_zoom_to_the_union_and_get_a_readable_name() -> None:
    model, x, res = _result(dn.WholeMap(1))
    field = receptive_fields(model, tuple(x.shape))["8"]
    figure = projection_figure(res, receptive_field=field, input_rgb=_rgb())
    assert res.extents is not None
    assert figure.crops[0] == field.span(res.extents[0, 0].tolist(), (SIZE, SIZE))
    assert figure.names == ["k0_joint_map1"]
    assert "whole:1" in figure.labels[0]
    full = projection_figure(res, input_rgb=_rgb(), options=FigureOptions(full_frame=True))
    assert full.crops[0] == (0, 0, SIZE, SIZE)


def test_fc_units_are_named_by_their_class() -> None:
    model = _nets.small_classifier()
    model.categories = ("cat", "dog, puppy", "owl", "fish")  # type: ignore[assignment]
    model.preprocessing = Preprocessing(input_size=(16, 16))  # type: ignore[assignment]
    with dn.Deconvnet(model) as net:
        res = net.project(torch.rand(1, 3, 16, 16), "6", dn.Unit(1))
    figure = projection_figure(res)
    assert figure.records[0]["class_name"] == "dog"
    assert "dog" in figure.labels[0] and figure.names == ["k0_unit1"]


def test_repr_is_one_short_line() -> None:
    _, _, res = _result()
    text = repr(res)
    assert "\n" not in text and "tensor(" not in text and len(text) < 160
    assert "top:5" in text and "(1, 5, 3, 227, 227)" in text


def _data_images(markup: str) -> list[np.ndarray]:
    found = re.findall(r'src="data:image/png;base64,([^"]+)"', markup)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in found]


def test_html_shows_the_input_image_with_its_boxes_and_the_sheet() -> None:
    model = _nets.caffenet(width=8)
    model.preprocessing = Preprocessing(input_size=(SIZE, SIZE))  # type: ignore[assignment]
    colour = (10, 200, 30)
    x = torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, SIZE, SIZE) / 255
    with dn.Deconvnet(model) as net:
        res = net.project(x.contiguous(), "8", dn.TopMaps(2))
    pictures = _data_images(res._repr_html_() or "")
    assert len(pictures) == 1  # the sheet, which holds the input
    sheet = pictures[0]
    top, left, bottom, right = projection_figure(res).overview_box
    overview = sheet[top:bottom, left:right]
    share = (np.abs(overview.astype(int) - colour).sum(axis=2) <= 3).mean()
    assert share > 0.3  # the input itself fills the overview's image area
    assert sheet.shape[0] > bottom + 2 * SIZE // 4  # the tiles follow below


def test_png_repr_is_the_sheet() -> None:
    _, _, res = _result()
    png = res._repr_png_()
    assert png is not None
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_save_writes_what_the_cli_writes(tmp_path: Path) -> None:
    _, _, res = _result(dn.TopMaps(3))
    manifest_path = res.save(tmp_path / "out")
    document = json.loads(manifest_path.read_text())
    entry = document["images"][0]
    assert (tmp_path / "out" / entry["sheet"]).is_file()
    for record in entry["projections"]:
        with Image.open(tmp_path / "out" / record["file"]) as image:
            assert min(image.size) >= 128
    assert document["selection"] == "top:3" and document["rule"] == "zeiler"


@pytest.mark.parametrize("display", ["rgb", "signed", "heat", "overlay"])
def test_every_view_renders_on_a_sheet(display: str) -> None:
    _, _, res = _result(dn.TopMaps(2))
    options = FigureOptions(display=display)  # type: ignore[arg-type]
    figure = projection_figure(res, input_rgb=_rgb(), options=options)
    assert figure.sheet.dtype == np.uint8 and figure.sheet.shape[2] == 3


def test_jupyter_draws_the_figure_once_for_both_representations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import deconvnet.figures.projection as module

    calls = []
    original = module.projection_figure

    def counting(*args: object, **kwargs: object) -> module.ProjectionFigure:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "projection_figure", counting)
    _, _, res = _result(dn.TopMaps(2))
    assert res._repr_html_() and res._repr_png_()
    assert len(calls) == 1
