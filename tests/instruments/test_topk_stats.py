"""Activation statistics of the top-k scan (max, mean, fire rate per map): running, mergeable.

Oracle: every activation of every image stored (one forward per image, float64 NumPy),
then max, mean of spatial means and the fraction of images whose map maximum is > 0
computed literally. Tolerance: the tie network's activations are exact float32 integers,
so maxima and fire counts match exactly and the float64 means to 1e-12 relative.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deconvnet import topk
from deconvnet.errors import InputError
from deconvnet.instruments.topk.state import MapStats, TopKState
from tests import _datasets, _nets

K = 3


@pytest.fixture
def array_data(tmp_path: Path):
    return _datasets.tie_images(tmp_path)


def literal_stats(net: nn.Sequential, data, upto: int, ids: list[int]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        acts = np.stack([net[: upto + 1](data[i].image[None])[0].double().numpy() for i in ids])
    maxima = acts.max(axis=(2, 3))  # (images, maps)
    return {
        "max": maxima.max(axis=0),
        "mean": acts.mean(axis=(2, 3)).mean(axis=0),
        "fire_rate": (maxima > 0).mean(axis=0),
    }


def assert_stats(stats: MapStats, expected: dict[str, np.ndarray], images: int) -> None:
    assert stats.images == images
    np.testing.assert_array_equal(stats.maximum.numpy(), expected["max"])
    np.testing.assert_allclose(stats.mean.numpy(), expected["mean"], rtol=1e-12)
    np.testing.assert_array_equal(stats.fire_rate.numpy(), expected["fire_rate"])


def test_scan_statistics_equal_the_literal_ones(array_data) -> None:
    net = _nets.tie_net()
    index = topk.scan(net, array_data, ["0", "3"], k=K, batch_size=4)
    ids = list(range(len(array_data)))
    for layer, upto in (("0", 0), ("3", 3)):
        assert_stats(index.state.stats[layer], literal_stats(net, array_data, upto, ids), len(ids))
    rates = index.state.stats["0"].fire_rate
    assert bool((rates > 0).any()) and bool((rates < 1).any()), "data must fire some maps only"


def test_statistics_of_chosen_maps_are_those_maps(array_data) -> None:
    net = _nets.tie_net()
    full = topk.scan(net, array_data, ["3"], k=K).state.stats["3"]
    part = topk.scan(net, array_data, ["3"], k=K, maps=[1, 3]).state.stats["3"]
    assert part.channels.tolist() == [1, 3]
    torch.testing.assert_close(part.maximum, full.maximum[[1, 3]], rtol=0, atol=0)
    torch.testing.assert_close(part.mean_sum, full.mean_sum[[1, 3]], rtol=1e-12, atol=0)


def test_shard_statistics_merge_into_the_full_scan(array_data) -> None:
    net = _nets.tie_net()
    full = topk.scan(net, array_data, ["0"], k=K).state
    shards = [[0, 1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    a, b, c = (topk.scan(net, array_data, ["0"], k=K, image_ids=ids).state for ids in shards)
    for merged in (a.merge(b).merge(c), c.merge(b.merge(a))):
        got, want = merged.stats["0"], full.stats["0"]
        assert got.images == want.images
        torch.testing.assert_close(got.maximum, want.maximum, rtol=0, atol=0)
        torch.testing.assert_close(got.fired, want.fired, rtol=0, atol=0)
        torch.testing.assert_close(got.mean_sum, want.mean_sum, rtol=1e-12, atol=0)


def test_statistics_survive_to_dict_and_resume(array_data, tmp_path: Path) -> None:
    net = _nets.tie_net()
    state = topk.scan(net, array_data, ["3"], k=K).state
    loaded = TopKState.from_dict(state.to_dict())
    torch.testing.assert_close(loaded.stats["3"].mean_sum, state.stats["3"].mean_sum)
    assert loaded.stats["3"].images == state.stats["3"].images

    class Killed(Exception):
        pass

    def kill(done: int, total: int | None) -> None:
        if done >= 6:
            raise Killed

    options = {"k": K, "batch_size": 2, "checkpoint": tmp_path / "c.pt", "checkpoint_every": 1}
    with pytest.raises(Killed):
        topk.scan(net, array_data, ["3"], progress=kill, **options)
    resumed = topk.scan(net, array_data, ["3"], resume=True, **options).state.stats["3"]
    ids = list(range(len(array_data)))
    assert_stats(resumed, literal_stats(net, array_data, 3, ids), len(ids))


def test_state_without_statistics_does_not_merge_with_one_that_has_them(array_data) -> None:
    state = topk.scan(_nets.tie_net(), array_data, ["0"], k=K, image_ids=[0, 1]).state
    other = topk.scan(_nets.tie_net(), array_data, ["0"], k=K, image_ids=[2, 3]).state
    old = TopKState(k=other.k, layers=other.layers, images_seen=2, skipped=())
    with pytest.raises(InputError, match="statistics"):
        state.merge(old)


def test_empty_statistics_are_nan_and_nan_activations_do_not_fire() -> None:
    stats = MapStats.empty(torch.tensor([0, 1]))
    assert bool(stats.mean.isnan().all()) and bool(stats.fire_rate.isnan().all())
    folded = stats.with_batch(
        torch.tensor([[float("nan"), 2.0], [-1.0, 0.0]]), torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    )
    assert folded.maximum.tolist() == [-1.0, 2.0]
    assert folded.fired.tolist() == [0, 1]
    assert folded.mean.tolist() == [-0.5, 0.5]
