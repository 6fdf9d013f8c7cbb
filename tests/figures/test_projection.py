"""Projection pictures: tiles cropped to receptive fields, sheets, Jupyter display."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

import deconvnet as dn
from deconvnet.engine.receptive import receptive_fields
from deconvnet.figures.projection import projection_figure
from tests import _nets


def _result():
    model = _nets.caffenet(width=8)
    x = torch.randn(1, 3, 227, 227, generator=torch.Generator().manual_seed(0))
    with dn.Deconvnet(model) as net:
        return model, x, net.project(x, layer="8", select=dn.TopMaps(3))


def test_tiles_are_the_receptive_field_crops_of_the_projection():
    model, x, res = _result()
    field = receptive_fields(model, tuple(x.shape))["8"]
    rgb = np.zeros((227, 227, 3), dtype=np.uint8)
    figure = projection_figure(res, receptive_field=field, input_rgb=rgb)
    for k, (tile, box) in enumerate(zip(figure.tiles, figure.boxes, strict=True)):
        y, x_ = (int(p) for p in res.positions[0, k])
        assert box == field.box(y, x_, (227, 227))
        assert tile.shape[:2] == (box[2] - box[0], box[3] - box[1])
        # Everything the projection holds lies inside the unit's box (zeiler, no bias).
        outside = res.images[0, k].clone()
        outside[:, box[0] : box[2], box[1] : box[3]] = 0
        assert float(outside.abs().max()) == 0.0
        assert float(res.images[0, k].abs().max()) > 0
    assert figure.records[0]["receptive_field_box"] == list(figure.boxes[0])
    assert figure.sheet.shape[0] > 227


def test_jupyter_displays_the_sheet():
    _, _, res = _result()
    png = res._repr_png_()
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size[0] > 100
