"""The top-k scan over torch.distributed (deconvnet.instruments.topk.distributed).

Oracle: the single-process ``topk.scan`` and ``topk.project`` on the same data, compared
bit for bit (``torch.equal``, tolerance zero) with what real ``torch.distributed.run`` jobs
of 2 and 3 gloo ranks compute over 1,000 CIFAR-10 test images; shards and the merge
against literal Python.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deconvnet import models, topk
from deconvnet.errors import InputError
from deconvnet.inputs import datasets
from deconvnet.inputs.labels import Labels
from deconvnet.instruments.topk.distributed import Group, merge_states, rank_checkpoint, shard
from tests import _datasets, _nets, _torchrun

RANKS_SCRIPT = Path(__file__).with_name("_topk_ranks.py")
LAYERS = "features.0,features.10"  # conv1 and conv4 of the default model
MAPS = "random:3"
K = 9
BATCH = 32  # 1,000 images: 31 full batches and a short one, split unevenly over 3 ranks


@pytest.mark.parametrize(
    ("num_images", "batch_size", "world_size"),
    [(1000, 32, 2), (1000, 32, 3), (10, 4, 3), (5, 4, 3), (0, 4, 2), (97, 1, 8)],
)
def test_shards_are_whole_batches_that_cover_every_image_once(
    num_images: int, batch_size: int, world_size: int
) -> None:
    shards = [shard(num_images, batch_size, r, world_size) for r in range(world_size)]
    assert [i for part in shards for i in part] == list(range(num_images))
    for part in filter(None, shards):  # empty shards (fewer batches than ranks) read nothing
        assert part.start % batch_size == 0  # every batch is one the single process sees
        assert len(part) % batch_size == 0 or part.stop == num_images
    batches = [-(-len(part) // batch_size) for part in shards]
    assert max(batches) - min(batches) <= 1


def test_group_comes_from_the_launchers_environment() -> None:
    assert Group.from_environment({}) is None
    assert Group.from_environment({"WORLD_SIZE": "1", "RANK": "0"}) is None
    group = Group.from_environment({"WORLD_SIZE": "3", "RANK": "2", "LOCAL_RANK": "0"})
    assert group == Group(rank=2, world_size=3, local_rank=0)
    assert rank_checkpoint("out/topk_checkpoint.pt", group) == Path(
        "out/topk_checkpoint.rank2-of-3.pt"
    )
    for bad in ({"WORLD_SIZE": "2"}, {"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "x"}):
        with pytest.raises(InputError):
            Group.from_environment(bad)


def test_merge_counts_a_rank_that_read_nothing_as_empty_maps(tmp_path: Path) -> None:
    data = _datasets.tie_images(tmp_path)
    net = _nets.tie_net()
    whole = topk.scan(net, data, ["0"], k=4, batch_size=4)
    first = topk.scan(net, data, ["0"], k=4, batch_size=4, image_ids=range(8))
    rest = topk.scan(net, data, ["0"], k=4, batch_size=4, image_ids=range(8, len(data)))
    nothing = topk.scan(net, data, ["0"], k=4, batch_size=4, image_ids=[])
    assert not nothing.state.layers
    merged = merge_states([nothing.state, first.state, nothing.state, rest.state])
    for name in ("values", "image_ids", "positions", "channels"):
        assert torch.equal(
            getattr(merged.layers["0"], name), getattr(whole.state.layers["0"], name)
        )
    assert merged.images_seen == whole.state.images_seen
    labels = Labels.of("array", [str(i % 3) for i in range(len(data))], numeric=True)
    whole = topk.scan(net, data, ["0"], k=4, batch_size=4, labels=labels)
    parts = [
        topk.scan(net, data, ["0"], k=4, batch_size=4, image_ids=ids, labels=labels).state
        for ids in ([], range(8), range(8, len(data)))
    ]
    merged = merge_states(parts).stats["0"]
    assert torch.equal(merged.class_sums, whole.state.stats["0"].class_sums)
    assert torch.equal(merged.histogram, whole.state.stats["0"].histogram)


@pytest.fixture(scope="module")
def cifar(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _torchrun.cifar_subset(shared_data, tmp_path_factory.mktemp("cifar") / "images")


@pytest.fixture(scope="module")
def single_process(cifar: Path) -> tuple[topk.TopKIndex, topk.Projections]:
    model = models.load("default")
    data = datasets.open_dataset(cifar, model.preprocessing)
    index = topk.scan(
        model, data, LAYERS.split(","), k=K, maps=MAPS, batch_size=BATCH,
        labels=data.class_labels(),
    )  # fmt: skip
    return index, topk.project(index, model, data)


@pytest.mark.parametrize(
    "world_size", [2, pytest.param(3, marks=pytest.mark.slow)], ids=["2ranks", "3ranks"]
)
def test_torchrun_job_equals_the_single_process_scan_bit_for_bit(
    world_size: int, cifar: Path, single_process: tuple, tmp_path: Path
) -> None:
    out = tmp_path / "result.pt"
    command = [
        *_torchrun.launcher(world_size, module=True),
        str(RANKS_SCRIPT), str(cifar), str(out), LAYERS, MAPS, str(K), str(BATCH),
    ]  # fmt: skip
    job = _torchrun.run(command)
    assert job.returncode == 0, job.stderr[-3000:]
    found = torch.load(out, weights_only=True)
    index, projections = single_process
    assert found["num_images"] == index.num_images == 1000
    state = topk.TopKState.from_dict(found["state"])
    assert list(state.layers) == list(index.state.layers)
    assert state.images_seen == index.state.images_seen == 1000
    for name, top in index.state.layers.items():
        for field in ("channels", "values", "image_ids", "positions"):
            assert torch.equal(getattr(state.layers[name], field), getattr(top, field)), field
        stats, alone = state.stats[name], index.state.stats[name]
        assert torch.equal(stats.histogram, alone.histogram)
        assert stats.class_counts.tolist() == [100] * 10  # a folder per class, 100 each
        assert torch.equal(stats.class_counts, alone.class_counts)
        # float64 sums added in another order (per rank, then merged): 1e-12 relative
        torch.testing.assert_close(stats.class_sums, alone.class_sums, rtol=1e-12, atol=1e-12)
    assert {int(i): n for i, n in found["names"].items()} == index.names
    assert len(found["projections"]) == len(projections) == 2 * 3 * K
    # the ranks' counts add up to one process's: one reverse pass per projection
    assert found["passes"] == [projections.reverse_passes, projections.forward_images]
    assert projections.reverse_passes == len(projections)
    for (layer, channel, rank), item in projections.items():
        got = found["projections"][f"{layer}/{channel}/{rank}"]
        assert torch.equal(got["projection"], item.projection)  # every pixel, every bit
        assert torch.equal(got["patch"], torch.from_numpy(item.patch.copy()))
        assert tuple(got["crop_box"]) == item.crop_box
        assert got["value"] == item.value
