"""Dataset-wide top-k (deconvnet.instruments.topk): scan, merge, resume, project.

Oracles: a brute force that stores every activation of every image (one forward per
image) and ranks with Python's ``sorted`` on ``(-value, image id)`` and NumPy's first
argmax; receptive-field boxes written out by hand for a known layout; the engine called
one ``Neuron`` at a time. Exactness: the tie network has integer weights and inputs in
{0, 255}, so every activation is an exact float32 integer whatever the batching.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deconvnet import Deconvnet, Neuron, topk
from deconvnet.errors import InputError
from deconvnet.inputs.datasets import ImageFolder, open_dataset
from deconvnet.inputs.images import resized_rgb
from deconvnet.instruments.topk.project import projection_runs
from deconvnet.instruments.topk.state import EMPTY_ID, TopKState
from tests import _datasets, _nets
from tests.engine.test_project_units import count_seeds

K = 4


@pytest.fixture
def array_data(tmp_path: Path):
    return _datasets.tie_images(tmp_path)


def brute_force(net: nn.Sequential, data, upto: int, k: int, ids: list[int] | None = None):
    """Every activation stored; per map, images ranked by (-max, id); first argmax."""
    ids = list(range(len(data))) if ids is None else ids
    with torch.no_grad():
        acts = {i: net[: upto + 1](data[i].image[None])[0].numpy() for i in ids}
    channels = next(iter(acts.values())).shape[0]
    result = []
    for channel in range(channels):
        maxima = {i: float(a[channel].max()) for i, a in acts.items()}
        order = sorted(ids, key=lambda i: (-maxima[i], i))[:k]
        entries = []
        for i in order:
            flat = int(np.argmax(acts[i][channel]))  # first maximum, row-major
            width = acts[i].shape[2]
            entries.append((maxima[i], i, (flat // width, flat % width)))
        result.append(entries)
    return result


def state_as_lists(state: TopKState, layer: str):
    top = state.layers[layer]
    out = []
    for column in range(top.channels.numel()):
        entries = []
        for rank in range(top.k):
            image_id = int(top.image_ids[rank, column])
            if image_id != EMPTY_ID:
                y, x = top.positions[rank, column].tolist()
                entries.append((float(top.values[rank, column]), image_id, (y, x)))
        out.append(entries)
    return out


def test_streaming_topk_equals_brute_force_with_ties(array_data) -> None:
    net = _nets.tie_net()
    index = topk.scan(net, array_data, ["0", "3"], k=K, batch_size=3)
    for layer, upto in (("0", 0), ("3", 3)):
        expected = brute_force(net, array_data, upto, K)
        assert state_as_lists(index.state, layer) == expected
    ranked = state_as_lists(index.state, "3")
    values = [v for entries in ranked for v, _, _ in entries]
    assert len(values) != len(set(values)), "the data must contain exact ties"
    assert index.state.images_seen == len(array_data)


def test_image_appears_once_per_map_and_batching_does_not_matter(array_data) -> None:
    net = _nets.tie_net()
    one = topk.scan(net, array_data, ["3"], k=K, batch_size=1)
    many = topk.scan(net, array_data, ["3"], k=K, batch_size=13)
    assert state_as_lists(one.state, "3") == state_as_lists(many.state, "3")
    ids = one.state.layers["3"].image_ids
    for column in range(ids.shape[1]):
        assert len(set(ids[:, column].tolist())) == K


def test_float_network_matches_brute_force(array_data) -> None:
    """Batching changes float32 rounding (relative 1e-7), never the order here."""
    net = _nets.float_net()
    index = topk.scan(net, array_data, ["3"], k=K, batch_size=4)
    expected = brute_force(net, array_data, 3, K)
    found = state_as_lists(index.state, "3")
    for want, got in zip(expected, found, strict=True):
        assert [(i, p) for _, i, p in want] == [(i, p) for _, i, p in got]
        np.testing.assert_allclose([v for v, _, _ in got], [v for v, _, _ in want], rtol=1e-6)


def test_fewer_images_than_k_leaves_empty_slots(array_data) -> None:
    index = topk.scan(_nets.tie_net(), array_data, ["0"], k=K, image_ids=[4, 1])
    assert index.state.layers["0"].image_ids[2:].eq(EMPTY_ID).all()
    assert {e.image_id for e in index.state.entries()} <= {1, 4}


def test_maps_choice_tracks_the_chosen_channels(array_data) -> None:
    net = _nets.tie_net()
    full = topk.scan(net, array_data, ["3"], k=K)
    first = topk.scan(net, array_data, ["3"], k=K, maps=2)
    drawn = topk.scan(net, array_data, ["3"], k=K, maps="random:3", seed=5)
    again = topk.scan(net, array_data, ["3"], k=K, maps="random:3", seed=5)
    assert first.state.layers["3"].channels.tolist() == [0, 1]
    channels = drawn.state.layers["3"].channels.tolist()
    assert channels == again.state.layers["3"].channels.tolist() == sorted(set(channels))
    assert len(channels) == 3
    expected = state_as_lists(full.state, "3")
    assert state_as_lists(drawn.state, "3") == [expected[c] for c in channels]
    for bad in ("some", 0, "random:0", [1, 1]):
        with pytest.raises(ValueError):
            topk.scan(net, array_data, ["3"], maps=bad)


def test_shard_states_merge_into_one_scan_in_any_order(array_data) -> None:
    net = _nets.tie_net()
    full = topk.scan(net, array_data, ["0", "3"], k=K).state
    parts = [
        topk.scan(net, array_data, ["0", "3"], k=K, image_ids=ids).state
        for ids in ([0, 1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12])
    ]
    a, b, c = parts
    for merged in (a.merge(b).merge(c), c.merge(a.merge(b)), b.merge(c).merge(a)):
        assert merged.images_seen == full.images_seen
        for layer in ("0", "3"):
            assert state_as_lists(merged, layer) == state_as_lists(full, layer)
    with pytest.raises(InputError, match="overlapping"):
        a.merge(a)


def test_resumed_scan_equals_an_uninterrupted_one(array_data, tmp_path: Path) -> None:
    net = _nets.tie_net()
    checkpoint = tmp_path / "scan.pt"
    uninterrupted = topk.scan(net, array_data, ["0", "3"], k=K, batch_size=2)

    class Killed(Exception):
        pass

    def kill_after_three_batches(done: int, total: int | None) -> None:
        if done >= 6:
            raise Killed

    options = {"k": K, "batch_size": 2, "checkpoint": checkpoint, "checkpoint_every": 2}
    with pytest.raises(Killed):
        topk.scan(net, array_data, ["0", "3"], progress=kill_after_three_batches, **options)
    calls: list[int] = []
    resumed = topk.scan(
        net, array_data, ["0", "3"], resume=True, progress=lambda d, t: calls.append(d), **options
    )
    assert calls[0] == 4  # two batches of two were checkpointed before the kill
    for layer in ("0", "3"):
        assert state_as_lists(resumed.state, layer) == state_as_lists(uninterrupted.state, layer)
    assert resumed.state.images_seen == uninterrupted.state.images_seen
    assert resumed.names == uninterrupted.names
    assert not list(tmp_path.glob("*.tmp"))


def test_mismatching_checkpoint_is_a_clear_error(array_data, tmp_path: Path) -> None:
    net = _nets.tie_net()
    checkpoint = tmp_path / "scan.pt"
    topk.scan(net, array_data, ["3"], k=K, checkpoint=checkpoint)
    with pytest.raises(InputError, match="another scan: its k"):
        topk.scan(net, array_data, ["3"], k=K + 1, checkpoint=checkpoint, resume=True)
    other = tmp_path / "other.npz"
    np.savez(other, x=_datasets.binary_images(seed=1))
    with pytest.raises(InputError, match="fingerprint"):
        topk.scan(
            net,
            open_dataset(other, _datasets.TIE_SPEC),
            ["3"],
            k=K,
            checkpoint=checkpoint,
            resume=True,
        )
    with pytest.raises(InputError, match="its model"):
        topk.scan(_nets.float_net(), array_data, ["3"], k=K, checkpoint=checkpoint, resume=True)
    checkpoint.write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a top-k scan checkpoint"):
        topk.scan(net, array_data, ["3"], k=K, checkpoint=checkpoint, resume=True)


def test_failed_checkpoint_write_keeps_the_old_file(
    array_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = _nets.tie_net()
    checkpoint = tmp_path / "scan.pt"
    topk.scan(net, array_data, ["3"], k=K, checkpoint=checkpoint)
    before = checkpoint.read_bytes()

    def broken_save(obj: object, handle) -> None:
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        topk.scan(net, array_data, ["3"], k=K - 1, checkpoint=checkpoint)
    assert checkpoint.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.npz", "scan.pt"]


def test_corrupt_files_are_skipped_and_reported_and_sizes_mix(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    for number, size in enumerate([(8, 8), (10, 12), (8, 8), (10, 12), (6, 9)]):
        pixels = (rng.integers(0, 2, (*size, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{number}.png")
    (tmp_path / "img2b.png").write_bytes(b"\x89PNG broken")
    data = ImageFolder(tmp_path, _datasets.TIE_SPEC)
    net = _nets.tie_net()
    index = topk.scan(net, data, ["3"], k=3, batch_size=4)
    assert index.skipped == [(str(tmp_path / "img2b.png"), data[3].error)]
    assert index.state.images_seen == 5 and index.num_images == 6
    readable = [i for i in range(len(data)) if data[i].image is not None]
    assert state_as_lists(index.state, "3") == brute_force(net, data, 3, 3, readable)


def test_scan_leaves_the_model_untouched(array_data) -> None:
    net = _nets.float_net()
    net.train()
    before = [p.clone() for p in net.parameters()]
    topk.scan(net, array_data, ["0"], k=K)
    with pytest.raises(InputError, match="feature maps"):
        topk.scan(nn.Sequential(nn.Flatten(), nn.Linear(192, 3)), array_data, ["1"])
    assert net.training
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert all(not m._forward_hooks for m in net.modules())


def test_worker_processes_give_the_same_result(array_data) -> None:
    net = _nets.tie_net()
    serial = topk.scan(net, array_data, ["3"], k=K, batch_size=4)
    parallel = topk.scan(net, array_data, ["3"], k=K, batch_size=4, workers=2)
    assert state_as_lists(parallel.state, "3") == state_as_lists(serial.state, "3")


def hand_box(layer: str, y: int, x: int) -> tuple[int, int, int, int]:
    """Receptive fields of float_net written out: conv 5/1 pad 2, pool 3/2, conv 3/1 pad 1."""
    if layer == "0":  # size 5, centre (y, x)
        return y - 2, x - 2, y + 3, x + 3
    # pool: size 7, stride 2, centre 2y + 1; conv2: size 11, stride 2, centre 2y + 1
    return 2 * y - 4, 2 * x - 4, 2 * y + 7, 2 * x + 7


def test_projections_match_the_engine_one_at_a_time_and_hand_boxes(array_data) -> None:
    net = _nets.float_net()
    index = topk.scan(net, array_data, ["0", "3"], k=3, maps=3)
    projections = topk.project(index, net, array_data)
    assert len(projections) == 2 * 3 * 3
    with Deconvnet(net) as engine:
        for (layer, channel, rank), item in projections.items():
            entry = item.entry
            assert (entry.layer, entry.channel, entry.rank) == (layer, channel, rank)
            y, x = entry.position
            field = hand_box(layer, y, x)
            assert item.field_box == field
            clipped = (max(field[0], 0), max(field[1], 0), min(field[2], 8), min(field[3], 8))
            assert item.crop_box == clipped
            x_in = array_data[entry.image_id].image[None]
            single = engine.project(x_in, layer, Neuron(channel, y, x)).images[0, 0]
            top, left, bottom, right = clipped
            # topk.project runs several images in one forward: float32 convolutions round
            # differently at batch 8 than at batch 1 (seen: 4e-5 relative on values of ~30)
            scale = float(single.abs().max())
            torch.testing.assert_close(
                item.projection, single[:, top:bottom, left:right], rtol=1e-4, atol=1e-5 * scale
            )
            outside = single.clone()
            outside[:, top:bottom, left:right] = 0
            assert outside.abs().max() == 0  # nothing outside the receptive field
            shown = resized_rgb(array_data.raw_image(entry.image_id), _datasets.TIE_SPEC)
            np.testing.assert_array_equal(item.patch, shown[top:bottom, left:right])
            assert item.value == pytest.approx(entry.value, rel=1e-5, abs=1e-6)


def test_projection_refuses_another_dataset(array_data, tmp_path: Path) -> None:
    index = topk.scan(_nets.tie_net(), array_data, ["0"], k=2, maps=1)
    other = tmp_path / "other.npz"
    np.savez(other, x=_datasets.binary_images(seed=2))
    with pytest.raises(InputError, match="differs"):
        topk.project(index, _nets.tie_net(), open_dataset(other, _datasets.TIE_SPEC))


def test_one_reverse_pass_per_projection_and_one_forward_per_image(
    array_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Images of one run rank different numbers of maps; none is padded to the largest
    (the stage used to run 2.2-3.0x more reverse passes than projections on SqueezeNet's
    fire layers), and each image goes through one forward pass for both layers."""
    net = _nets.float_net()
    index = topk.scan(net, array_data, ["0", "3"], k=3, maps=6)
    entries = list(index.state.entries())
    per_image: dict[int, int] = {}
    for entry in entries:
        per_image[entry.image_id] = per_image.get(entry.image_id, 0) + 1
    padded = sum(
        max(per_image[i] for i in run) * len(run) for run in projection_runs(index)
    )  # what padding each run to its largest count would cost
    assert padded > len(entries)
    seeds = count_seeds(monkeypatch)
    projections = topk.project(index, net, array_data)
    assert len(projections) == len(entries)
    assert projections.reverse_passes == sum(seeds) == len(entries)
    assert projections.forward_images == len(per_image)
