"""Class selectivity, the distribution of each map's per-image maximum, and the scan state
that keeps their running sums (per map x class sums, a fixed-bin histogram): mergeable
across shards, resumable, refused when tampered with.

Oracle: one forward per image through the tie network (exact float32 integers, so sums and
bins match exactly), its per-image map maxima grouped by label in plain Python, and the
Morcos et al. index written out literally.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from deconvnet import topk
from deconvnet.errors import CheckpointError, InputError
from deconvnet.inputs.datasets import open_dataset
from deconvnet.instruments.topk import checkpoint
from deconvnet.instruments.topk.state import HISTOGRAM_BINS, HISTOGRAM_EDGES, TopKState
from deconvnet.instruments.units import class_selectivity, distribution, top_labels
from tests import _checkpoints, _datasets, _nets

K = 3
LABELS = [0, 2, 1, 2, 0, 1, 2, 2, 0, 1, 1, 0, 2]


@pytest.fixture
def labelled(tmp_path: Path):
    path = tmp_path / "labelled.npz"
    np.savez(path, x=_datasets.binary_images(), y=np.array(LABELS))
    return open_dataset(path, _datasets.TIE_SPEC)


def literal_maxima(net, data, upto: int) -> np.ndarray:
    """(images, maps) per-image maxima, one forward per image."""
    with torch.no_grad():
        return np.stack(
            [net[: upto + 1](data[i].image[None])[0].double().amax(dim=(1, 2)).numpy()
             for i in range(len(data))]
        )  # fmt: skip


def literal_index(means: list[float]) -> float:
    top = max(means)
    rest = list(means)
    rest.remove(top)
    mu_rest = sum(rest) / len(rest)
    return (top - mu_rest) / (top + mu_rest)


def test_class_sums_and_histograms_equal_the_literal_ones(labelled) -> None:
    net = _nets.tie_net()
    labels = labelled.class_labels()
    index = topk.scan(net, labelled, ["0", "3"], k=K, batch_size=4, labels=labels)
    for layer, upto in (("0", 0), ("3", 3)):
        stats = index.state.stats[layer]
        maxima = literal_maxima(net, labelled, upto)
        assert stats.class_counts.tolist() == [LABELS.count(c) for c in range(3)]
        for c in range(3):
            rows = [i for i, label in enumerate(LABELS) if label == c]
            np.testing.assert_array_equal(stats.class_sums[:, c].numpy(), maxima[rows].sum(0))
        for column in range(maxima.shape[1]):
            expected = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
            for value in maxima[:, column]:  # bin i holds [edges[i-1], edges[i])
                expected[int((HISTOGRAM_EDGES.numpy() <= value).sum())] += 1
            np.testing.assert_array_equal(stats.histogram[column].numpy(), expected)


def test_the_sums_merge_across_shards_and_survive_a_resume(labelled, tmp_path: Path) -> None:
    net = _nets.tie_net()
    labels = labelled.class_labels()
    options = {"k": K, "batch_size": 2, "labels": labels}
    full = topk.scan(net, labelled, ["3"], **options).state.stats["3"]
    shards = [[0, 1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    a, b, c = (topk.scan(net, labelled, ["3"], image_ids=ids, **options).state for ids in shards)
    for merged in (a.merge(b).merge(c), c.merge(b.merge(a))):
        got = merged.stats["3"]
        assert torch.equal(got.histogram, full.histogram)
        assert torch.equal(got.class_counts, full.class_counts)
        assert torch.equal(got.class_sums, full.class_sums)  # exact integers
    saved = TopKState.from_dict(a.to_dict()).stats["3"]
    assert torch.equal(saved.class_sums, a.stats["3"].class_sums)

    with pytest.raises(_checkpoints.Stopped):
        topk.scan(net, labelled, ["3"], checkpoint=tmp_path / "c.pt", checkpoint_every=1,
                  progress=_checkpoints.stop_at(6), **options)  # fmt: skip
    resumed = topk.scan(net, labelled, ["3"], checkpoint=tmp_path / "c.pt", resume=True,
                        **options).state.stats["3"]  # fmt: skip
    assert torch.equal(resumed.histogram, full.histogram)
    assert torch.equal(resumed.class_sums, full.class_sums)
    with pytest.raises(CheckpointError, match="another scan: its classes"):
        topk.scan(net, labelled, ["3"], checkpoint=tmp_path / "c.pt", resume=True, k=K,
                  batch_size=2)  # fmt: skip


def test_a_checkpoint_of_the_previous_format_is_refused_in_one_line(tmp_path: Path) -> None:
    data = _checkpoints.dataset(tmp_path)
    path = _checkpoints.partial_checkpoint(tmp_path, data)
    body = path.read_bytes().partition(b"\n")[2]
    old = f"deconvnet-topk-checkpoint/2 {hashlib.sha256(body).hexdigest()}\n".encode()
    path.write_bytes(old + body)
    with pytest.raises(CheckpointError, match=r"another version.*checkpoint/2.*without --resume"):
        checkpoint.read_payload(path)


@pytest.mark.parametrize(
    ("field", "change", "message"),
    [
        ("histogram", lambda t: t.add_(1), "histogram must count"),
        ("class_counts", lambda t: t.add_(1), "class counts must add up"),
        ("class_sums", lambda t: t.fill_(math.nan), "class sums must be finite"),
    ],
)
def test_a_tampered_histogram_or_class_sum_is_refused(labelled, tmp_path: Path, field, change,
                                                      message) -> None:  # fmt: skip
    net = _nets.tie_net()
    path = tmp_path / "c.pt"
    options = {"k": K, "batch_size": 2, "labels": labelled.class_labels(), "checkpoint": path}
    with pytest.raises(_checkpoints.Stopped):
        topk.scan(net, labelled, ["3"], progress=_checkpoints.stop_at(6), checkpoint_every=1,
                  **options)  # fmt: skip
    payload = checkpoint.read_payload(path)
    change(payload["state"]["stats"]["3"][field])
    path.write_bytes(_checkpoints.signed(payload))
    with pytest.raises(CheckpointError, match=message):
        topk.scan(net, labelled, ["3"], resume=True, **options)


def test_selectivity_index_is_morcos_definition() -> None:
    result = class_selectivity([6.0, 2.0, 0.0, 9.0], [2, 2, 1, 3], ["a", "b", "c", "d"])
    assert result.means == (3.0, 1.0, 0.0, 3.0)
    assert result.ranking == (0, 3, 1, 2)  # a tie goes to the lower class
    assert result.mu_top == 3.0 and result.mu_rest == pytest.approx(4.0 / 3.0)
    assert result.index == pytest.approx(literal_index([3.0, 1.0, 0.0, 3.0]))
    only = class_selectivity([5.0, 0.0], [1, 1], ["a", "b"])
    assert only.index == 1.0 and only.top_class == 0
    assert class_selectivity([0.0, 0.0], [1, 1], ["a", "b"]).index is None  # 0/0
    assert class_selectivity([2.0, 0.0], [1, 0], ["a", "b"]).index is None  # one class
    assert class_selectivity([2.0, 0.0], [1, 0], ["a", "b"]).means == (2.0, None)
    with pytest.raises(InputError, match="no class has an image"):
        class_selectivity([0.0], [0], ["a"])
    with pytest.raises(InputError, match="one entry per class"):
        class_selectivity([0.0], [0, 1], ["a"])


def test_top_labels_majority_and_ties() -> None:
    assert top_labels([]) is None
    found = top_labels([3, 1, 3, 1, 2])
    assert found is not None and (found.majority, found.count, found.k) == (1, 2, 5)


def test_distribution_reads_median_and_top_share_from_the_bins() -> None:
    edges = [0.0, 1.0, 10.0, 100.0]
    counts = [0, 5, 3, 1, 1]  # bins: <0, [0,1), [1,10), [10,100), >=100
    dist = distribution(edges, counts, [150.0, 20.0])
    assert dist.images == 10
    assert dist.median == pytest.approx(0.0)  # bin [0, 1) around zero... its centre
    assert dist.p99 == 100.0  # the open top bin
    assert dist.top_share == pytest.approx(0.8)  # bins entirely below 20: 5 + 3
    with pytest.raises(InputError, match="one count"):
        distribution(edges, [1, 2])
