"""What a unit prefers, from the running sums a top-k scan keeps: class selectivity and
the distribution of its per-image maximum.

Both are computed from mergeable statistics (:class:`~deconvnet.instruments.topk.state.MapStats`),
so they describe the whole scanned dataset whatever its size, sharding or resumes:

* **class selectivity** (Morcos et al. 2018, "On the importance of single directions for
  generalization"): per class, the mean over its images of the map's per-image maximum;
  ``μ_top`` the largest class mean, ``μ_rest`` the mean of the other class means, and the
  index ``(μ_top − μ_rest) / (μ_top + μ_rest)``: 0 when every class drives the map alike,
  1 when only one class does (for non-negative activations such as a ReLU's output; it is
  undefined, ``None``, when ``μ_top + μ_rest <= 0`` or fewer than two classes have images);
* **distribution**: the histogram of the per-image maximum over fixed log-spaced bins
  (:data:`~deconvnet.instruments.topk.state.HISTOGRAM_EDGES`), its median and 99th
  percentile read from the bins, and where the unit's top-k values lie against it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from deconvnet.errors import InputError

SELECTIVE = 0.3
"""A selectivity index from which a unit is called class selective on its page."""


@dataclass(frozen=True)
class ClassSelectivity:
    """A map's class means and selectivity index (see the module docstring).

    Attributes
    ----------
    names : the classes as shown.
    means : per class, the mean of the map's per-image maximum (None: no image of it).
    counts : images read per class.
    ranking : class indices with images, by mean descending (ties: lower index first).
    mu_top, mu_rest : the largest class mean and the mean of the other class means.
    index : ``(mu_top - mu_rest) / (mu_top + mu_rest)``, or None where undefined.
    """

    names: tuple[str, ...]
    means: tuple[float | None, ...]
    counts: tuple[int, ...]
    ranking: tuple[int, ...]
    mu_top: float
    mu_rest: float
    index: float | None

    @property
    def top_class(self) -> int:
        """The class whose images drive the map most on average."""
        return self.ranking[0]


def class_selectivity(
    class_sums: Sequence[float], class_counts: Sequence[int], names: Sequence[str]
) -> ClassSelectivity:
    """Class means and selectivity index from a map's per-class sums of per-image maxima.

    Raises
    ------
    InputError
        Sums, counts and names of different lengths, a negative count, or no class with
        an image.
    """
    if not len(class_sums) == len(class_counts) == len(names):
        raise InputError("class sums, counts and names must have one entry per class")
    if any(count < 0 for count in class_counts):
        raise InputError("class counts must be >= 0")
    means = tuple(
        total / count if count else None
        for total, count in zip(class_sums, class_counts, strict=True)
    )
    present = [number for number, mean in enumerate(means) if mean is not None]
    if not present:
        raise InputError("no class has an image: nothing to compare")
    ranking = tuple(sorted(present, key=lambda number: (-_known(means[number]), number)))
    mu_top = _known(means[ranking[0]])
    rest = [_known(means[number]) for number in ranking[1:]]
    mu_rest = math.fsum(rest) / len(rest) if rest else math.nan
    denominator = mu_top + mu_rest
    index = (mu_top - mu_rest) / denominator if rest and denominator > 0 else None
    return ClassSelectivity(
        names=tuple(names),
        means=means,
        counts=tuple(int(count) for count in class_counts),
        ranking=ranking,
        mu_top=mu_top,
        mu_rest=mu_rest,
        index=index,
    )


@dataclass(frozen=True)
class TopLabels:
    """The classes of a map's top-k images: the most frequent one and how many of them."""

    majority: int
    count: int
    k: int


def top_labels(labels: Sequence[int]) -> TopLabels | None:
    """The majority class of the top-k images' ``labels`` (ties: the lowest class index);
    None for no images."""
    if not labels:
        return None
    counts = Counter(labels)
    majority = min(counts, key=lambda label: (-counts[label], label))
    return TopLabels(majority=majority, count=counts[majority], k=len(labels))


@dataclass(frozen=True)
class Distribution:
    """The distribution of a map's per-image maximum over the scanned images.

    Attributes
    ----------
    edges : the histogram's bin edges (ascending); ``counts`` has one more entry (the
        open bins below the first and from the last edge).
    counts : images per bin.
    images : images counted.
    median, p99 : read from the bins (the geometric centre of the bin that holds them;
        0 for the bin around zero); None without images.
    top_values : the unit's top-k values, strongest first.
    top_share : the fraction of images whose maximum is below the k-th top value, at bin
        resolution (how far out the top-k lie).
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    images: int
    median: float | None
    p99: float | None
    top_values: tuple[float, ...]
    top_share: float | None


def distribution(
    edges: Sequence[float], counts: Sequence[int], top_values: Sequence[float] = ()
) -> Distribution:
    """The distribution of a map's per-image maximum from its fixed-bin histogram.

    Raises
    ------
    InputError
        ``counts`` not one longer than ``edges``, or a negative count.
    """
    if len(counts) != len(edges) + 1 or any(count < 0 for count in counts):
        raise InputError("a histogram needs one count >= 0 per bin, len(edges) + 1 bins")
    images = int(sum(counts))
    below = None
    if images and top_values:
        kth = min(top_values)
        below = sum(count for number, count in enumerate(counts) if _upper(edges, number) <= kth)
    return Distribution(
        edges=tuple(float(edge) for edge in edges),
        counts=tuple(int(count) for count in counts),
        images=images,
        median=_quantile(edges, counts, 0.5),
        p99=_quantile(edges, counts, 0.99),
        top_values=tuple(float(value) for value in top_values),
        top_share=None if below is None else below / images,
    )


def bin_centre(edges: Sequence[float], number: int) -> float:
    """A representative value of bin ``number``: geometric centre of its edges (same sign),
    0 for the bin around zero, the edge itself for the open end bins."""
    if number == 0:
        return float(edges[0])
    if number == len(edges):
        return float(edges[-1])
    low, high = float(edges[number - 1]), float(edges[number])
    if low < 0 < high:
        return 0.0
    return math.copysign(math.sqrt(low * high), high)


def _quantile(edges: Sequence[float], counts: Sequence[int], fraction: float) -> float | None:
    total = sum(counts)
    if not total:
        return None
    running = 0
    for number, count in enumerate(counts):
        running += count
        if running >= fraction * total:
            return bin_centre(edges, number)
    return bin_centre(edges, len(counts) - 1)


def _upper(edges: Sequence[float], number: int) -> float:
    """The upper edge of bin ``number`` (infinity for the last)."""
    return float(edges[number]) if number < len(edges) else math.inf


def _known(value: float | None) -> float:
    if value is None:
        raise InputError("a class without images has no mean")
    return value
