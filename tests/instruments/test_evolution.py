"""Feature evolution (Fig. 4) against a brute-force top-1 loop and a built checkpoint pair."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deconvnet.errors import InputError, WeightsError
from deconvnet.inputs.datasets import ImageDataset, open_dataset
from deconvnet.inputs.preprocessing import Preprocessing
from deconvnet.instruments.evolution import evolve

SPEC = Preprocessing(input_size=(10, 10), resize_rule="none")
CHANGED_MAP = 2
RTOL = 1e-6
"""The scan's value is the engine's float32 forward; the oracle's is the same arithmetic."""


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(5, 4, 3), nn.ReLU()
    ).eval()


def _data(tmp_path: Path, count: int = 12) -> ImageDataset:
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, x=rng.integers(0, 256, (count, 10, 10, 3)).astype(np.uint8))
    return open_dataset(path, SPEC)


def _changed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same state with only conv1's filter (and bias) of :data:`CHANGED_MAP` redrawn."""
    other = {key: value.clone() for key, value in state.items()}
    generator = torch.Generator().manual_seed(7)
    other["0.weight"][CHANGED_MAP] = torch.randn(
        other["0.weight"][CHANGED_MAP].shape, generator=generator
    )
    other["0.bias"][CHANGED_MAP] += 0.5
    return other


def _brute_top1(
    model: nn.Module, data: ImageDataset, stop: int
) -> list[tuple[float, int, tuple[int, int]]]:
    """Per map: (value, image id, position) of the largest activation over all images;
    ties to the lower image id, then the first position in row-major order."""
    best: list[tuple[float, int, tuple[int, int]]] = []
    with torch.no_grad():
        outputs = [model[: stop + 1](data.input_image(i))[0] for i in range(len(data))]
    for channel in range(outputs[0].shape[0]):
        found = None
        for image_id, out in enumerate(outputs):
            plane = out[channel]
            flat = int(torch.argmax(plane.flatten()))  # first maximum in row-major order
            value = float(plane.flatten()[flat])
            if found is None or value > found[0]:
                found = (value, image_id, divmod(flat, plane.shape[1]))
        assert found is not None
        best.append(found)
    return best


def test_top1_per_checkpoint_equals_a_brute_force_loop(tmp_path: Path) -> None:
    model, data = _net(), _data(tmp_path)
    states = [model.state_dict(), _changed(model.state_dict())]
    result = evolve(model, states, data, ["1", "4"], maps="all")
    for column, state in enumerate(states):
        reference = copy.deepcopy(model)
        reference.load_state_dict(state)
        for layer, stop in (("1", 1), ("4", 4)):
            for channel, (value, image_id, position) in enumerate(
                _brute_top1(reference, data, stop)
            ):
                cell = result.cell(layer, channel, column)
                assert cell is not None
                assert cell.entry.image_id == image_id
                assert cell.entry.position == position
                assert cell.entry.value == pytest.approx(value, rel=RTOL)


def test_changing_one_filter_changes_only_that_maps_row(tmp_path: Path) -> None:
    model, data = _net(), _data(tmp_path)
    states = [model.state_dict(), _changed(model.state_dict())]
    result = evolve(model, states, data, ["1"], maps="all")
    assert result.channels["1"] == (0, 1, 2, 3, 4)
    for channel in result.channels["1"]:
        first, second = result.cell("1", channel, 0), result.cell("1", channel, 1)
        assert first is not None and second is not None
        same = (
            first.entry.image_id == second.entry.image_id
            and first.entry.position == second.entry.position
            and torch.equal(first.projection, second.projection)
        )
        assert same == (channel != CHANGED_MAP), channel


def test_files_in_training_order_and_the_model_untouched(tmp_path: Path) -> None:
    model, data = _net(), _data(tmp_path)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    paths = []
    for epoch, state in ((1, model.state_dict()), (5, _changed(model.state_dict()))):
        paths.append(tmp_path / f"net_epoch{epoch:02d}.pth")
        torch.save(state, paths[-1])
    result = evolve(model, paths, data, ["4"], maps=[0, 3])
    assert result.labels == ("net_epoch01", "net_epoch05")
    assert result.channels["4"] == (0, 3)
    assert set(result.cells) == {("4", c, k) for c in (0, 3) for k in (0, 1)}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())


def test_bad_checkpoints_are_refused(tmp_path: Path) -> None:
    model, data = _net(), _data(tmp_path)
    with pytest.raises(InputError, match="at least one checkpoint"):
        evolve(model, [], data, ["1"])
    with pytest.raises(InputError, match="labels"):
        evolve(model, [model.state_dict()], data, ["1"], labels=["a", "b"])
    wrong = {k: v for k, v in model.state_dict().items() if not k.startswith("3.")}
    with pytest.raises(WeightsError, match="missing keys"):
        evolve(model, [wrong], data, ["1"])
