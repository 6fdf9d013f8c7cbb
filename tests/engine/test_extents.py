"""Projection.extents and ReceptiveField.span: the zoom box of every selection kind.

Oracle: the seeded positions computed literally from the layer output, and the union of
per-unit boxes taken one unit at a time.
"""

from __future__ import annotations

import torch

from deconvnet.engine.engine import Deconvnet
from deconvnet.engine.receptive import ReceptiveField, receptive_fields, union_box
from deconvnet.engine.selection import MapMax, Threshold, TopMaps, Unit, WholeMap
from tests._nets import small_classifier, small_conv


def _literal_extent(mask: torch.Tensor) -> list[int]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if ys.numel() == 0:
        return [-1, -1, -1, -1]
    return [int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())]


def test_single_unit_extents_are_their_positions() -> None:
    torch.manual_seed(0)
    model = small_conv().eval()
    x = torch.randn(2, 3, 24, 24)
    with Deconvnet(model) as net:
        res = net.project(x, "2", TopMaps(3))
    assert res.positions is not None and res.extents is not None
    assert torch.equal(res.extents, torch.cat([res.positions, res.positions], dim=-1))


def test_joint_extents_bound_the_seeded_activations() -> None:
    torch.manual_seed(1)
    model = small_conv().eval()
    x = torch.randn(2, 3, 24, 24)
    with Deconvnet(model) as net:
        y = net.layer_output(x, "2")
        threshold = float(y.flatten().kthvalue(y.numel() - 5).values)
        for select, keep in (
            (WholeMap(1), lambda b: y[b, 1] != 0),
            (Threshold(threshold), lambda b: (y[b] >= threshold).any(dim=0)),
        ):
            res = net.project(x, "2", select)
            assert res.extents is not None
            for b in range(2):
                assert res.extents[b, 0].tolist() == _literal_extent(keep(b))


def test_nothing_seeded_gives_minus_one() -> None:
    torch.manual_seed(2)
    model = small_conv().eval()
    x = torch.randn(1, 3, 24, 24)
    with Deconvnet(model) as net:
        res = net.project(x, "2", Threshold(1e9))
    assert res.extents is not None and res.extents[0, 0].tolist() == [-1, -1, -1, -1]


def test_fc_layers_have_no_extents() -> None:
    model = small_classifier().eval()
    with Deconvnet(model) as net:
        res = net.project(torch.randn(1, 3, 16, 16), "6", Unit(0))
    assert res.extents is None


def test_span_is_the_union_of_unit_boxes() -> None:
    field = ReceptiveField(size=(7, 7), stride=(2, 2), offset=(1.0, 1.0))
    hw = (40, 40)
    extent = (3, 1, 6, 9)
    one_by_one = union_box(
        field.box(y, x, hw)
        for y in range(extent[0], extent[2] + 1)
        for x in range(extent[1], extent[3] + 1)
    )
    assert field.span(extent, hw) == one_by_one
    assert field.span((-1, -1, -1, -1), hw) is None


def test_span_matches_traced_fields_on_a_map() -> None:
    torch.manual_seed(3)
    model = small_conv().eval()
    x = torch.randn(1, 3, 24, 24)
    field = receptive_fields(model, tuple(x.shape))["2"]
    with Deconvnet(model) as net:
        res = net.project(x, "2", MapMax(0))
        whole = net.project(x, "2", WholeMap(0))
    assert res.extents is not None and whole.extents is not None
    (y0, x0) = res.positions[0, 0].tolist()  # type: ignore[index]
    assert field.span(res.extents[0, 0].tolist(), (24, 24)) == field.box(y0, x0, (24, 24))
    support = torch.nonzero(whole.images[0, 0].abs().sum(0))
    box = field.span(whole.extents[0, 0].tolist(), (24, 24))
    assert box is not None
    # the projection never reaches outside the seeded units' fields
    assert int(support[:, 0].min()) >= box[0] and int(support[:, 0].max()) < box[2]
    assert int(support[:, 1].min()) >= box[1] and int(support[:, 1].max()) < box[3]
