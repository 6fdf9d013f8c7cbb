"""The running top-k state of a dataset scan: O(k x maps x layers) memory, any dataset size.

**What is ranked** (the paper's Fig. 2): for each feature map, every image contributes its
own strongest activation of that map (value and position), and the map keeps the ``k``
images with the strongest such maxima. One image therefore appears at most once per map,
and the ``k`` entries show ``k`` different images.

**Tie order**, fixed so that results never depend on batching, sharding or resuming:
value descending, then image id ascending; within an image the position is the first
maximum in row-major order (smallest ``(y, x)``), which is also the engine's ``MapMax``.
NaN activations rank as ``-inf``.

**What was read** travels with the state: the SHA-256 of the stored bytes of every image
that holds a top-k slot (``digests``, checked again before an image is projected or a scan
resumed), and ``content``, an order-independent digest of every image the scan read (the
sum of ``SHA-256(image id, bytes digest)`` modulo 2**256), so shards merge it by addition.

**Activation statistics** (:class:`MapStats`), beside the top-k: per map, the largest
maximum, the mean activation (the mean over images of each image's spatial mean) and the
fraction of images where the map fires (its maximum is above zero). They are running sums,
so they merge across shards like the top-k. Two more of the same kind describe the map's
per-image maximum: its **distribution**, a histogram over fixed bins
(:data:`HISTOGRAM_EDGES`, the same for every scan, so histograms add), and, when the
images have class labels, its **sum per class** beside the number of images of each class
(O(maps x classes) memory), from which class means and the class selectivity index follow
(:mod:`deconvnet.instruments.units`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor

from deconvnet.errors import InputError

EMPTY_ID = 2**62
"""Image id of an empty slot (fewer than ``k`` images seen); sorts after every real id."""
VALUE_DTYPE = torch.float64
"""Values are kept in float64 so float32/float16 activations are held exactly."""
DIGEST_BYTES = 32
"""SHA-256 digests of the images' stored bytes."""
CONTENT_MODULUS = 2**256
_SPATIAL = 2
_UNREAD = b"unread"
DECADE_BINS = 10
"""Histogram bins per factor of ten (each bin spans a factor of 10**0.1, about 1.26)."""
SMALLEST_DECADE, LARGEST_DECADE = -3, 6
"""Magnitudes binned: 1e-3 to 1e6; below 1e-3 (either sign) is the one "zero" bin, beyond
1e6 an overflow bin at each end."""


def _histogram_edges() -> Tensor:
    steps = torch.arange(SMALLEST_DECADE * DECADE_BINS, LARGEST_DECADE * DECADE_BINS + 1)
    positive = torch.pow(10.0, steps.to(VALUE_DTYPE) / DECADE_BINS)
    return torch.cat([-positive.flip(0), positive])


HISTOGRAM_EDGES = _histogram_edges()
"""Ascending bin edges (float64) of every map's histogram of per-image maxima: bin ``i``
holds values in ``[edges[i-1], edges[i])``, bin 0 everything below ``edges[0]`` (``-inf``
too) and the last bin everything from ``edges[-1]`` up; symmetric log-spaced bins."""
HISTOGRAM_BINS = int(HISTOGRAM_EDGES.numel()) + 1


def histogram_bins(values: Tensor) -> Tensor:
    """The bin of each value (float64, any shape) in :data:`HISTOGRAM_EDGES`; NaN goes to
    bin 0 like ``-inf``."""
    values = torch.nan_to_num(values, nan=-torch.inf)
    return torch.bucketize(values, HISTOGRAM_EDGES, right=True)


@dataclass(frozen=True, eq=False)
class LayerTopK:
    """The best ``k`` (value, image, position) of each tracked map of one layer.

    Attributes
    ----------
    channels : LongTensor (M,) — the tracked maps, ascending.
    values : Tensor (k, M) float64 — rank 0 first; ``-inf`` in empty slots.
    image_ids : LongTensor (k, M) — :data:`EMPTY_ID` in empty slots.
    positions : LongTensor (k, M, 2) — ``(y, x)`` in the map; ``-1`` in empty slots.
    """

    channels: Tensor
    values: Tensor
    image_ids: Tensor
    positions: Tensor

    @classmethod
    def empty(cls, channels: Tensor, k: int) -> LayerTopK:
        """No image seen yet."""
        count = int(channels.numel())
        return cls(
            channels=channels.to(torch.long).cpu(),
            values=torch.full((k, count), -torch.inf, dtype=VALUE_DTYPE),
            image_ids=torch.full((k, count), EMPTY_ID, dtype=torch.long),
            positions=torch.full((k, count, _SPATIAL), -1, dtype=torch.long),
        )

    @property
    def k(self) -> int:
        return int(self.values.shape[0])

    def merged(self, other: LayerTopK, *, check_overlap: bool = False) -> LayerTopK:
        """Top ``k`` of both: sort by image id, then stably by value descending."""
        if not torch.equal(self.channels, other.channels):
            raise InputError("cannot merge top-k states that track different maps")
        values = torch.cat([self.values, other.values])
        ids = torch.cat([self.image_ids, other.image_ids])
        positions = torch.cat([self.positions, other.positions])
        if check_overlap:
            _check_disjoint(ids)
        by_id = torch.argsort(ids, dim=0, stable=True)
        values, ids = values.gather(0, by_id), ids.gather(0, by_id)
        positions = positions.gather(0, by_id[..., None].expand_as(positions))
        by_value = torch.argsort(values, dim=0, descending=True, stable=True)[: self.k]
        return LayerTopK(
            channels=self.channels,
            values=values.gather(0, by_value),
            image_ids=ids.gather(0, by_value),
            positions=positions.gather(0, by_value[..., None].expand(-1, -1, _SPATIAL)),
        )

    def with_batch(self, image_ids: Tensor, maxima: Tensor, positions: Tensor) -> LayerTopK:
        """Fold in one batch: ``image_ids`` (B,), ``maxima`` (B, M), ``positions`` (B, M, 2)."""
        count = maxima.shape[1]
        candidates = LayerTopK(
            channels=self.channels,
            values=torch.nan_to_num(
                maxima.to(device="cpu", dtype=VALUE_DTYPE), nan=-torch.inf, posinf=torch.inf
            ),
            image_ids=image_ids.to(device="cpu", dtype=torch.long)[:, None].expand(-1, count),
            positions=positions.to(device="cpu", dtype=torch.long),
        )
        return self.merged(candidates)

    def to_dict(self) -> dict[str, Tensor]:
        return {
            "channels": self.channels,
            "values": self.values,
            "image_ids": self.image_ids,
            "positions": self.positions,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Tensor]) -> LayerTopK:
        return cls(
            channels=data["channels"],
            values=data["values"],
            image_ids=data["image_ids"],
            positions=data["positions"],
        )


@dataclass(frozen=True, eq=False)
class MapStats:
    """Running activation statistics of the tracked maps of one layer over the images read.

    Attributes
    ----------
    channels : LongTensor (M,) — the tracked maps, as in :class:`LayerTopK`.
    images : images folded in.
    maximum : Tensor (M,) float64 — the largest activation seen (``-inf`` before any image;
        NaN activations are ignored).
    mean_sum : Tensor (M,) float64 — the sum over images of each image's spatial mean of
        the map (NaN activations count as 0).
    fired : LongTensor (M,) — images whose maximum of the map is above zero.
    histogram : LongTensor (M, :data:`HISTOGRAM_BINS`) — images per bin of the map's
        per-image maximum.
    class_sums : Tensor (M, C) float64 — per class, the sum of the map's per-image maxima
        over the images of that class (non-finite maxima count as 0); C = 0 unlabelled.
    class_counts : LongTensor (C,) — images read per class.
    """

    channels: Tensor
    images: int
    maximum: Tensor
    mean_sum: Tensor
    fired: Tensor
    histogram: Tensor
    class_sums: Tensor
    class_counts: Tensor

    @classmethod
    def empty(cls, channels: Tensor, classes: int = 0) -> MapStats:
        count = int(channels.numel())
        return cls(
            channels=channels.to(torch.long).cpu(),
            images=0,
            maximum=torch.full((count,), -torch.inf, dtype=VALUE_DTYPE),
            mean_sum=torch.zeros(count, dtype=VALUE_DTYPE),
            fired=torch.zeros(count, dtype=torch.long),
            histogram=torch.zeros(count, HISTOGRAM_BINS, dtype=torch.long),
            class_sums=torch.zeros(count, classes, dtype=VALUE_DTYPE),
            class_counts=torch.zeros(classes, dtype=torch.long),
        )

    @property
    def classes(self) -> int:
        """Number of classes the sums are kept for (0: an unlabelled scan)."""
        return int(self.class_counts.numel())

    @property
    def mean(self) -> Tensor:
        """Mean activation per map (NaN before any image)."""
        if not self.images:
            return torch.full_like(self.mean_sum, torch.nan)
        return self.mean_sum / self.images

    @property
    def fire_rate(self) -> Tensor:
        """Fraction of images where each map fires (NaN before any image)."""
        fired = self.fired.to(VALUE_DTYPE)
        return fired / self.images if self.images else torch.full_like(fired, torch.nan)

    def with_batch(self, maxima: Tensor, means: Tensor, labels: Tensor | None = None) -> MapStats:
        """Fold in one batch: per-image maxima and spatial means, both (B, M), and the
        images' class indices (B,) when the scan is labelled."""
        raw = maxima.to("cpu", VALUE_DTYPE)
        maxima = torch.nan_to_num(raw, nan=-torch.inf, posinf=torch.inf)
        means = means.to("cpu", VALUE_DTYPE)
        bins = histogram_bins(raw)
        histogram = self.histogram.clone()
        histogram.scatter_add_(1, bins.T.contiguous(), torch.ones_like(bins.T))
        class_sums, class_counts = self.class_sums, self.class_counts
        if self.classes:
            if labels is None:
                raise InputError("a labelled scan needs every batch's labels")
            labels = labels.to("cpu", torch.long)
            finite = torch.where(torch.isfinite(raw), raw, torch.zeros_like(raw))
            class_sums = self.class_sums.index_add(1, labels, finite.T)
            class_counts = self.class_counts.index_add(0, labels, torch.ones_like(labels))
        return MapStats(
            channels=self.channels,
            images=self.images + int(maxima.shape[0]),
            maximum=torch.maximum(self.maximum, maxima.amax(dim=0)),
            mean_sum=self.mean_sum + means.sum(dim=0),
            fired=self.fired + (maxima > 0).sum(dim=0),
            histogram=histogram,
            class_sums=class_sums,
            class_counts=class_counts,
        )

    def merged(self, other: MapStats) -> MapStats:
        """The statistics of both (disjoint) sets of images."""
        if not torch.equal(self.channels, other.channels) or self.classes != other.classes:
            raise InputError("cannot merge activation statistics of different maps or classes")
        return MapStats(
            channels=self.channels,
            images=self.images + other.images,
            maximum=torch.maximum(self.maximum, other.maximum),
            mean_sum=self.mean_sum + other.mean_sum,
            fired=self.fired + other.fired,
            histogram=self.histogram + other.histogram,
            class_sums=self.class_sums + other.class_sums,
            class_counts=self.class_counts + other.class_counts,
        )

    def to_dict(self) -> dict[str, Tensor | int]:
        return {
            "channels": self.channels,
            "images": self.images,
            "maximum": self.maximum,
            "mean_sum": self.mean_sum,
            "fired": self.fired,
            "histogram": self.histogram,
            "class_sums": self.class_sums,
            "class_counts": self.class_counts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Tensor | int]) -> MapStats:
        keys = ("channels", "maximum", "mean_sum", "fired", "histogram", "class_sums")
        tensors = [data[key] for key in (*keys, "class_counts")]
        if not all(isinstance(t, Tensor) for t in tensors):
            raise InputError("malformed activation statistics")
        channels, maximum, mean_sum, fired, histogram, sums, counts = cast("list[Tensor]", tensors)
        return cls(channels, int(data["images"]), maximum, mean_sum, fired, histogram, sums, counts)


@dataclass(frozen=True, eq=False)
class Entry:
    """One ranked activation: map ``channel`` of ``layer``, ``rank`` 0 = strongest."""

    layer: str
    channel: int
    rank: int
    value: float
    image_id: int
    position: tuple[int, int]


@dataclass(frozen=True, eq=False)
class TopKState:
    """Top-k of every tracked map of every scanned layer, plus what the scan skipped.

    ``merge`` combines the states of scans over disjoint sets of images (global image
    ids) into the state one scan over all of them gives; it is associative and
    order-independent because the result is a pure function of the union of entries.
    """

    k: int
    layers: dict[str, LayerTopK]
    images_seen: int = 0
    skipped: tuple[tuple[int, str], ...] = field(default_factory=tuple)
    digests: Mapping[int, bytes] = field(default_factory=dict)
    """Image id -> SHA-256 of its stored bytes, for every image in some top-k slot."""
    content: int = 0
    """Order-independent digest of every image read (see the module docstring)."""
    stats: dict[str, MapStats] = field(default_factory=dict)
    """Activation statistics per layer (see :class:`MapStats`)."""

    def merge(self, other: TopKState) -> TopKState:
        """The state of one scan over both parts.

        Raises
        ------
        InputError
            Different ``k``, layers or maps, or an image id present in both states.
        """
        if list(self.stats) != list(other.stats):
            raise InputError("cannot merge top-k states whose activation statistics differ")
        if self.k != other.k or list(self.layers) != list(other.layers):
            raise InputError(
                f"cannot merge top-k states with k={self.k}, layers {list(self.layers)} and "
                f"k={other.k}, layers {list(other.layers)}"
            )
        skipped_ids = {image_id for image_id, _ in self.skipped}
        if skipped_ids & {image_id for image_id, _ in other.skipped}:
            raise InputError("cannot merge top-k states of overlapping image sets")
        layers = {
            name: top.merged(other.layers[name], check_overlap=True)
            for name, top in self.layers.items()
        }
        return TopKState(
            k=self.k,
            layers=layers,
            images_seen=self.images_seen + other.images_seen,
            skipped=tuple(sorted(self.skipped + other.skipped)),
            digests=ranked_digests(layers, {**self.digests, **other.digests}),
            content=(self.content + other.content) % CONTENT_MODULUS,
            stats={name: stats.merged(other.stats[name]) for name, stats in self.stats.items()},
        )

    def entries(self) -> Iterator[Entry]:
        """Every filled slot, per layer, map (ascending) and rank."""
        for name, top in self.layers.items():
            for column, channel in enumerate(top.channels.tolist()):
                for rank in range(top.k):
                    image_id = int(top.image_ids[rank, column])
                    if image_id == EMPTY_ID:
                        break
                    y, x = top.positions[rank, column].tolist()
                    yield Entry(
                        name, channel, rank, float(top.values[rank, column]), image_id, (y, x)
                    )

    def to_dict(self) -> dict[str, object]:
        """Plain tensors, ints and strings: loadable with ``torch.load(weights_only=True)``."""
        return {
            "k": self.k,
            "images_seen": self.images_seen,
            "skipped": [[image_id, message] for image_id, message in self.skipped],
            "layers": {name: top.to_dict() for name, top in self.layers.items()},
            "digests": {
                "image_ids": torch.tensor(sorted(self.digests), dtype=torch.long),
                "sha256": torch.tensor(
                    [list(self.digests[i]) for i in sorted(self.digests)], dtype=torch.uint8
                ).reshape(-1, DIGEST_BYTES),
            },
            "content": f"{self.content:064x}",
            "stats": {name: stats.to_dict() for name, stats in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TopKState:
        layers = data["layers"]
        skipped = data["skipped"]
        stats = data.get("stats", {})  # states written before the statistics have none
        digests = data.get("digests", {"image_ids": [], "sha256": []})
        if (
            not isinstance(layers, dict)
            or not isinstance(skipped, list)
            or not isinstance(digests, dict)
            or not isinstance(stats, dict)
        ):
            raise InputError("malformed top-k state")
        return cls(
            k=int(data["k"]),  # type: ignore[call-overload]
            layers={name: LayerTopK.from_dict(top) for name, top in layers.items()},
            images_seen=int(data["images_seen"]),  # type: ignore[call-overload]
            skipped=tuple((int(i), str(m)) for i, m in skipped),
            digests={
                int(i): bytes(row.tolist())
                for i, row in zip(digests["image_ids"], digests["sha256"], strict=True)
            },
            content=int(str(data.get("content", "0")), 16),
            stats={name: MapStats.from_dict(part) for name, part in stats.items()},
        )


def ranked_digests(
    layers: Mapping[str, LayerTopK], digests: Mapping[int, bytes]
) -> dict[int, bytes]:
    """``digests`` kept only for the images that hold a top-k slot in ``layers``."""
    ranked: set[int] = set()
    for top in layers.values():
        ranked.update(torch.unique(top.image_ids).tolist())
    return {i: digests[i] for i in sorted(ranked - {EMPTY_ID}) if i in digests}


def content_term(image_id: int, digest: bytes | None) -> int:
    """One image's share of :attr:`TopKState.content` (``digest`` None: not read)."""
    token = hashlib.sha256(image_id.to_bytes(8, "little", signed=True) + (digest or _UNREAD))
    return int.from_bytes(token.digest(), "little")


def content_sum(terms: Iterable[int]) -> int:
    """Fold :func:`content_term` values into a :attr:`TopKState.content`."""
    return sum(terms) % CONTENT_MODULUS


def _check_disjoint(ids: Tensor) -> None:
    """Raise if one image id fills two slots of one map (the parts overlap)."""
    ordered = torch.sort(ids, dim=0).values
    repeated = (ordered[1:] == ordered[:-1]) & (ordered[1:] != EMPTY_ID)
    if bool(repeated.any()):
        image_id = int(ordered[1:][repeated][0])
        raise InputError(
            f"cannot merge top-k states of overlapping image sets (image id {image_id} in both)"
        )
