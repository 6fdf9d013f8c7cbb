"""Circuits over a scan: the layer's mean contributions equal the engine's contributions
computed one ranked unit at a time, links rank and share as defined, and a channel-wise
max pool above a map is fed by that map alone."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet import Deconvnet, models
from deconvnet.engine.selection import Units
from deconvnet.inputs.datasets import open_dataset
from deconvnet.instruments import circuits as C
from deconvnet.instruments.topk.scan import scan


@cache
def _model() -> torch.nn.Module:
    return models.load("default").eval()


@pytest.fixture(scope="module")
def scanned(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """The default model's conv3, conv4 and pool4 over 40 CIFAR-10 test photos, k = 3."""
    files = sorted((shared_data / "cifar10" / "test").glob("*/*.jpg"))[::125]
    folder = tmp_path_factory.mktemp("cifar")
    np.savez(
        folder / "x.npz", x=np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    )
    model = _model()
    dataset = open_dataset(folder / "x.npz", model.deconvnet_card.preprocessing)
    index = scan(model, dataset, ["conv3", "conv4", "pool4"], k=3, maps=[1, 4, 9, 30])
    return index, dataset


def test_layer_circuits_average_the_engine_one_unit_at_a_time(scanned) -> None:
    index, dataset = scanned
    model = _model()
    found = C.layer_circuits(index, model, dataset, "conv4", "relu3", rule="guided", batch_size=5)
    assert found.layer == "conv4" and found.upstream == "relu3"
    assert found.channels.tolist() == [1, 4, 9, 30] and found.images.tolist() == [3, 3, 3, 3]
    with Deconvnet(model, "guided") as net:
        for row, channel in enumerate(found.channels.tolist()):
            each = []
            for entry in (e for e in index.state.entries() if e.layer == "features.10"):
                if entry.channel != channel:
                    continue
                x = dataset.input_image(entry.image_id)
                one = net.contributions(
                    x,
                    "conv4",
                    "relu3",
                    Units(torch.tensor([channel]), torch.tensor([entry.position])),
                )
                each.append(one.contributions[0, 0].double())
                assert float(one.values[0, 0]) == pytest.approx(entry.value, rel=1e-5)
            expected = torch.stack(each).mean(dim=0)
            assert torch.allclose(found.matrix[row], expected, atol=1e-5, rtol=1e-4)


def test_links_rank_and_share_as_defined(scanned) -> None:
    index, dataset = scanned
    model = _model()
    below = C.layer_circuits(index, model, dataset, "conv4", "conv3", rule="gradient")
    above = C.layer_circuits(index, model, dataset, "pool4", "conv4", rule="gradient")
    circuit = C.unit_circuit(below, above, 4)
    row = below.matrix[1]
    assert [link.map for link in circuit.upstream] == torch.argsort(row, descending=True)[
        :5
    ].tolist()
    assert below.shares.abs().sum(dim=1).tolist() == pytest.approx([1.0] * 4)
    for link in circuit.upstream:
        assert link.share == pytest.approx(float(row[link.map] / row.abs().sum()))
    # max pooling works per channel: pool4's map 4 is fed by conv4's map 4 alone (maps 9
    # and 30 of pool4 are zero on these photos: nothing is fed)
    assert [(link.map, round(link.share, 6)) for link in circuit.downstream] == [(4, 1.0)]
    assert C.unit_circuit(below, above, 9).downstream == ()
    assert circuit.rest == pytest.approx(float(below.activations[1] - row.sum()))
    data = circuit.to_dict()
    assert data["upstream_layer"] == "conv3" and data["downstream_layer"] == "pool4"
    assert len(data["upstream"]) == 5


def test_image_circuit_and_previous_layer() -> None:
    model = _model()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    circuit = C.image_circuit(model, x, "conv4", "relu3", 7, rule="gradient")
    assert circuit.images == 1 and circuit.downstream == ()
    bias = float(model.features[10].bias.detach()[7])
    assert circuit.rest == pytest.approx(bias, abs=1e-4)
    assert C.previous_layer(model, ["conv2", "conv4", "pool4"], "conv4") == "features.4"
    assert C.previous_layer(model, ["conv2", "conv4"], "conv2") is None


def test_a_first_layer_has_downstream_links_only(scanned, tmp_path: Path) -> None:
    from deconvnet.figures.circuits import save_circuit

    index, dataset = scanned
    model = _model()
    above = C.layer_circuits(index, model, dataset, "conv4", "conv3", rule="gradient")
    channel = int(above.matrix.amax(dim=0).argmax())  # a conv3 map that feeds a tracked one
    circuit = C.unit_circuit(None, above, channel)
    assert circuit.upstream == () and circuit.activation is None and circuit.images == 0
    assert circuit.upstream_layer is None and circuit.downstream_layer == "conv4"
    assert len(circuit.downstream) > 0
    save_circuit(circuit, tmp_path, "first")  # None, not NaN: valid JSON


def test_unscanned_layer_and_another_dataset_are_refused(scanned, tmp_path: Path) -> None:
    from deconvnet.errors import InputError

    index, dataset = scanned
    model = _model()
    with pytest.raises(InputError, match="was not scanned"):
        C.layer_circuits(index, model, dataset, "conv2", "conv1")
    np.savez(tmp_path / "other.npz", x=np.zeros((3, 32, 32, 3), np.uint8))
    other = open_dataset(tmp_path / "other.npz", model.deconvnet_card.preprocessing)
    with pytest.raises(InputError, match="differs"):
        C.layer_circuits(index, model, other, "conv4", "conv3")
