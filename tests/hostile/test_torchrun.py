"""torchrun bit-identical in every field: the projection stage batches the same images
whatever the number of ranks (:func:`~deconvnet.instruments.topk.distributed.rank_share`),
so every projected value and pixel equals the single-process one; a rank started without
its job's store ends in one line.

The property is checked without launching ranks: each rank's share is projected in this
process exactly as that rank would (the gather only moves the results). Before the fix the
shares were every W-th ranked image: over 100 CIFAR-10 images (8 maps x k = 4 at conv2 and
conv4) 1, 2 and 2 of the 64 projections differed at 2, 3 and 4 ranks; over 300 images with
16 maps x k = 9 (the slow run), 1 and 4 of 288 at 2 and 4 ranks.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import _torchrun
from tests.hostile.conftest import WRONG, Tally

WORLDS = (2, 3, 4)


def test_every_rank_count_projects_the_single_process_bits(
    tally: Tally, shared_data: Path, tmp_path: Path
) -> None:
    check_rank_counts(tally, _torchrun.cifar_subset(shared_data, tmp_path, 10), maps=8, k=4)


@pytest.mark.slow
def test_every_rank_count_projects_the_single_process_bits_many(
    tally: Tally, shared_data: Path, tmp_path: Path
) -> None:
    check_rank_counts(tally, _torchrun.cifar_subset(shared_data, tmp_path, 30), maps=16, k=9)


def check_rank_counts(tally: Tally, cifar: Path, maps: int, k: int) -> None:
    from deconvnet import models
    from deconvnet.inputs import datasets
    from deconvnet.instruments.topk.distributed import rank_share
    from deconvnet.instruments.topk.project import project
    from deconvnet.instruments.topk.scan import scan

    model = models.load("default")
    data = datasets.open_dataset(cifar, model.preprocessing)
    index = scan(model, data, ["features.4", "features.10"], k=k, maps=maps, workers=0)
    alone = project(index, model, data)
    for world in WORLDS:
        shares = [rank_share(index, rank, world) for rank in range(world)]
        assert sorted(i for share in shares for i in share) == sorted(
            {entry.image_id for entry in index.state.entries()}
        )  # every ranked image, once
        found = {}
        for share in shares:
            found.update(project(index, model, data, image_ids=share))
        assert found.keys() == alone.keys()
        for key, item in found.items():
            with tally.case("torchrun projections", f"{world} ranks {key}") as mark:
                other = alone[key]
                if item.value != other.value or not torch.equal(item.projection, other.projection):
                    mark(WRONG, f"{world} ranks, {key}: {item.value!r} vs {other.value!r}")
    assert tally.bad("torchrun projections") == {}


def test_a_rank_without_its_store_is_one_line(tally: Tally, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = _torchrun.clean_environment(
        WORLD_SIZE="2", RANK="1", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    photos = tmp_path / "photos"
    from tests.faces.conftest import make_photos

    make_photos(photos, count=2)
    command = [
        sys.executable,
        "-m",
        "deconvnet",
        "topk",
        str(photos),
        "--layers",
        "conv1",
        "--workers",
        "0",
        "--dist-timeout",
        "2",
        "--out",
        str(tmp_path / "out"),
    ]
    with tally.case("torchrun lone rank", "rank 1 of 2, no store") as mark:
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        if done.returncode != 1 or len(lines) != 1 or "rank 1 of 2" not in lines[0]:
            mark(WRONG, f"exit {done.returncode}, {len(lines)} lines: {done.stderr[-400:]}")
    assert tally.bad("torchrun lone rank") == {}
    assert not os.path.exists(tmp_path / "out")
