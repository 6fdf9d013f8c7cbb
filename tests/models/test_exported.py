"""``.pt2`` archives read properly: the input shape (and a fixed batch) from the exported
program, the classes its layers were, the default layer, receptive fields and projections
equal to the eager model's, and nothing on stderr.

Oracle: the eager module the archive was exported from, traced and projected by the same
library (its fields are checked against hand tables and gradient supports in
tests/engine/test_receptive.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.export import Dim

import deconvnet as dn
from deconvnet.engine.receptive import layer_table
from deconvnet.errors import InputError
from deconvnet.models.card import batch_size_for, card_of, default_layer, require_any_batch
from deconvnet.models.own import load_own
from tests.engine.test_windowed import _graphs

HEIGHT, WIDTH = 48, 64  # not square: height and width must not be swapped anywhere


def _net() -> nn.Sequential:
    """Every geometry the tracer knows: a 5x5 conv, BatchNorm, 3x3/2 max pool, avg pool,
    zero padding, a strided dilated conv, global pooling, a classifier."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, padding=2), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.ZeroPad2d(1),
        nn.Conv2d(6, 6, 3, stride=2, dilation=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(6, 4),
    ).eval()  # fmt: skip


def _plain() -> nn.Sequential:
    """The same geometry with no BatchNorm (which keeps the engine on its general path):
    every op here has a windowed rule."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.ZeroPad2d(1),
        nn.Conv2d(6, 6, 3, stride=2, dilation=2), nn.ReLU(),
    ).eval()  # fmt: skip


def _export(
    path: Path,
    batch: int = 1,
    dynamic: dict[int, object] | None = None,
    decompose: bool = False,
    net: nn.Module | None = None,
) -> Path:
    program = torch.export.export(
        net if net is not None else _net(),
        (torch.randn(batch, 3, HEIGHT, WIDTH),),
        dynamic_shapes=None if dynamic is None else (dynamic,),
    )
    if decompose:  # core ATen: aten.convolution, max_pool2d_with_indices, mean.dim, …
        with warnings.catch_warnings():  # torch's own deprecation notice while it copies
            warnings.simplefilter("ignore", FutureWarning)
            program = program.run_decompositions()
    torch.export.save(program, path)
    return path


def test_a_static_export_says_its_shape_classes_and_default_layer(tmp_path: Path) -> None:
    model = load_own(str(_export(tmp_path / "net.pt2")))
    card = card_of(model)
    assert card.input_shape == (1, 3, HEIGHT, WIDTH)
    assert card.fixed_batch == 1 and card.fixed_size == (HEIGHT, WIDTH)
    eager = _net()
    assert dict(card.layer_types) == {
        name: type(module).__name__ for name, module in eager.named_modules() if name
    }
    assert {type(m).__name__ for n, m in model.named_modules() if n} == {"InterpreterModule"}
    assert card.default_layer == "9" == default_layer(eager)  # the last conv's rectifier
    assert default_layer(model) == "9"
    assert card.provenance is not None and card.provenance.weights == "own"


@pytest.mark.parametrize(
    ("dynamic", "shape"),
    [
        ({0: Dim.DYNAMIC}, (None, 3, HEIGHT, WIDTH)),
        ({0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}, (None, 3, None, None)),
    ],
    ids=["dynamic-batch", "dynamic-size"],
)
def test_dynamic_dimensions_are_free(
    tmp_path: Path, dynamic: dict[int, object], shape: tuple[int | None, ...]
) -> None:
    card = card_of(load_own(str(_export(tmp_path / "net.pt2", 2, dynamic))))
    assert card.input_shape == shape and card.fixed_batch is None
    assert card.fixed_size == (None if shape[2] is None else (HEIGHT, WIDTH))


@pytest.mark.parametrize("decompose", [False, True], ids=["training-ir", "core-aten"])
def test_receptive_fields_equal_the_eager_models(tmp_path: Path, decompose: bool) -> None:
    exported = load_own(str(_export(tmp_path / "net.pt2", decompose=decompose)))
    shape = (1, 3, HEIGHT, WIDTH)
    expected = layer_table(_net(), shape)
    found = layer_table(exported, shape)
    assert [(r.name, r.type, r.output_shape, r.rf) for r in found] == [
        (r.name, r.type, r.output_shape, r.rf) for r in expected
    ]
    fields = {row.name: row.rf for row in found}
    assert fields["0"] is not None and fields["0"].size == (5, 5)  # was 1x1 (no aten conv)
    assert fields["3"] is not None and not fields["3"].is_global  # was global after the pool


@pytest.mark.parametrize("rule", ["zeiler", "guided", "gradient"])
@pytest.mark.parametrize("decompose", [False, True], ids=["training-ir", "core-aten"])
def test_projections_equal_the_eager_models(tmp_path: Path, rule: str, decompose: bool) -> None:
    """The ATen spellings now reach the graph recorder too: the windowed reverse must give
    what the eager module gives (float64, ≤ 1e-10)."""
    path = _export(tmp_path / "net.pt2", 2, {0: Dim.DYNAMIC}, decompose)
    exported = load_own(str(path)).double()
    eager = _net().double()
    x = torch.randn(2, 3, HEIGHT, WIDTH, dtype=torch.float64)
    for layer in ("4", "8"):
        ours = dn.Deconvnet(exported, rule).project(x, layer, dn.TopMaps(3))
        theirs = dn.Deconvnet(eager, rule).project(x, layer, dn.TopMaps(3))
        assert torch.equal(ours.channels, theirs.channels)
        torch.testing.assert_close(ours.images, theirs.images, rtol=0, atol=1e-10)


@pytest.mark.parametrize("rule", ["zeiler", "guided"])
@pytest.mark.parametrize("decompose", [False, True], ids=["training-ir", "core-aten"])
def test_the_windowed_path_runs_on_the_programs_aten_ops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule: str, decompose: bool
) -> None:
    """aten.conv2d/convolution, the pools and the pads recorded as graph nodes: the fast
    path is taken on the export and agrees with the eager model (float64, ≤ 1e-10)."""
    path = _export(tmp_path / "net.pt2", 2, {0: Dim.DYNAMIC}, decompose, _plain())
    exported = load_own(str(path)).double()
    x = torch.randn(2, 3, HEIGHT, WIDTH, dtype=torch.float64)
    seen = _graphs(monkeypatch)
    ours = dn.Deconvnet(exported, rule).project(x, "7", dn.TopMaps(3))
    assert seen and seen[-1] is not None, "the windowed path was not used"
    monkeypatch.undo()
    theirs = dn.Deconvnet(_plain().double(), rule).project(x, "7", dn.TopMaps(3))
    assert torch.equal(ours.channels, theirs.channels)
    torch.testing.assert_close(ours.images, theirs.images, rtol=0, atol=1e-10)


def test_reading_an_archive_leaves_no_warnings(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = _export(tmp_path / "net.pt2")
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_own(str(path))
        layer_table(model, (1, 3, HEIGHT, WIDTH))
        dn.Deconvnet(model).project(torch.randn(1, 3, HEIGHT, WIDTH), "8", dn.TopMaps(2))
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr().err == ""


def test_a_fixed_batch_is_fed_that_batch_or_refused_before_running(tmp_path: Path) -> None:
    one = load_own(str(_export(tmp_path / "one.pt2", 1)))
    two = load_own(str(_export(tmp_path / "two.pt2", 2)))
    free = load_own(str(_export(tmp_path / "free.pt2", 2, {0: Dim.DYNAMIC})))
    assert batch_size_for(one, 32, "a scan") == 1
    assert batch_size_for(free, 32, "a scan") == 32
    with pytest.raises(InputError, match=r"only batches of exactly 2; re-export .* dynamic"):
        batch_size_for(two, 32, "a scan")
    with pytest.raises(InputError, match="invariance runs several images in one batch"):
        require_any_batch(one, "invariance")
    require_any_batch(free, "invariance")
    calls: list[int] = []
    one.register_forward_pre_hook(lambda module, args: calls.append(1))
    with pytest.raises(InputError, match=r"runs only batches of 1, got 3 image\(s\)"):
        dn.Deconvnet(one).project(torch.randn(3, 3, HEIGHT, WIDTH), "8", dn.TopMaps(1))
    assert calls == []  # refused before the model ran
    # the field tracer runs a fixed-batch model at its own batch
    assert layer_table(two, (1, 3, HEIGHT, WIDTH))[0].rf is not None
