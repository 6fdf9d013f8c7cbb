"""A faster reverse pass for single-unit seeds: receptive-field windows on the recorded graph.

A seed with one non-zero activation reaches only its receptive field: at every tensor the
signal is zero outside a window that grows by each layer's kernel and stride. This module
runs the reverse pass of a recorded :class:`~deconvnet.engine.graph.Graph` on those windows
only — the same transposed convolutions, unpooling and rules as the general path, on
tensors of the window's size — batched over all seeds. Branches are followed as the graph
has them: an addition sends its window down both inputs, a concatenation splits it on
channels, and where branches meet again their windows are summed on the smallest window
holding both. A window that outgrows its map is cut to the map. The general autograd path
is this module's oracle in the tests.

Every window has the same size for all seeds of a call (its position differs), so each
op runs once per batch of seeds. Values outside the map are kept at zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.engine.graph import Graph, Node
from deconvnet.engine.policies import ReversePolicy


@dataclass
class _Window:
    """The signal at one tensor for N seeds: ``data`` (N, C..., h, w) holds map rows
    ``tops[n]:tops[n]+h`` and columns ``lefts[n]:lefts[n]+w`` (they may leave the map,
    where the data is zero)."""

    data: Tensor
    tops: Tensor
    lefts: Tensor

    @property
    def size(self) -> tuple[int, int]:
        return int(self.data.shape[-2]), int(self.data.shape[-1])


def reverse_batch(
    graph: Graph,
    image_index: Tensor,
    channels: Tensor,
    positions: Tensor,
    values: Tensor,
    policy: ReversePolicy,
) -> Tensor:
    """Windowed reverse passes for N single-unit seeds.

    Parameters
    ----------
    image_index, channels : LongTensor (N,) — batch image and map of each seed.
    positions : LongTensor (N, 2) — the seeded unit.
    values : Tensor (N,) — the seed values.

    Returns
    -------
    Tensor (N, C_in, H, W), equal to the general path's projections.
    """
    count = channels.shape[0]
    layer_shape = graph.shapes[graph.layer]
    dtype = values.dtype
    seed = values.new_zeros((count, layer_shape[1], 1, 1))
    seed[torch.arange(count), channels, 0, 0] = values.to(dtype)
    index = image_index.cpu()
    signals: dict[int, _Window] = {
        graph.layer: _Window(seed, positions[:, 0].cpu().clone(), positions[:, 1].cpu().clone())
    }
    for node in reversed(graph.nodes):
        arriving = [signals.pop(value, None) for value in node.outputs]
        if all(window is None for window in arriving):
            continue
        for source, window in _step_back(node, arriving, graph, index, policy):
            if source is not None and window is not None:
                window = _cut_to_map(window, graph.shapes[source][-2:])
                signals[source] = _sum(signals.get(source), window)
    image = signals.get(0)
    shape = graph.shapes[0]
    if image is None:
        return values.new_zeros((count, *shape[1:]))
    return _paste(image, shape[-2:])


def _step_back(
    node: Node,
    arriving: list[_Window | None],
    graph: Graph,
    index: Tensor,
    policy: ReversePolicy,
) -> list[tuple[int | None, _Window | None]]:
    """(input value, its window) for each input of ``node``, from its outputs' windows."""
    kind, info = node.kind, node.info
    if kind == "split":
        return [(node.inputs[0], _unsplit(arriving, info["widths"], info["channels"]))]
    signal = arriving[0]
    assert signal is not None  # one output: it has a signal, or the node was skipped
    if kind == "add":
        return [(source, signal) for source in node.inputs]
    if kind == "cat":
        parts: list[tuple[int | None, _Window | None]] = []
        start = 0
        for source, width in zip(node.inputs, info["widths"], strict=True):
            data = signal.data[:, start : start + width]
            parts.append((source, _Window(data, signal.tops, signal.lefts)))
            start += width
        return parts
    source = node.inputs[0]
    if kind == "identity":
        return [(source, signal)]
    if kind == "reshape":
        data = signal.data
        if "inverse" in info:
            data = data.permute(info["inverse"])
        data = data.reshape(data.shape[0], *info["shape"], *data.shape[-2:])
        return [(source, _Window(data, signal.tops, signal.lefts))]
    if kind == "scale":
        return [(source, _Window(signal.data * info["scale"], signal.tops, signal.lefts))]
    if kind in ("relu", "relu6"):
        return [(source, _rectify(signal, info, index, policy))]
    if kind == "lrn":
        return [(source, _lrn(signal, info, index, policy))]
    in_hw = graph.shapes[source][-2:] if source is not None else (0, 0)
    if kind == "conv":
        return [(source, _conv_transpose(signal, info, in_hw))]
    if kind == "max_pool":
        return [(source, _unpool(signal, info, index, in_hw))]
    if kind == "avg_pool":
        return [(source, _avg_unpool(signal, info, in_hw))]
    raise AssertionError(f"no windowed rule for {kind}")  # Recorder.graph() admits only these


def _rectify(
    signal: _Window, info: dict[str, Any], index: Tensor, policy: ReversePolicy
) -> _Window:
    data = signal.data
    if policy.rule == "zeiler":  # ReLU and ReLU6 alike: rectify the signal
        data = torch.relu(data)
    elif policy.rule != "none":
        mask = _crop(info["mask"], index, signal.tops, signal.lefts, signal.size)
        data = (torch.relu(data) if policy.rule == "guided" else data) * mask
    return _Window(data, signal.tops, signal.lefts)


def _lrn(signal: _Window, info: dict[str, Any], index: Tensor, policy: ReversePolicy) -> _Window:
    """LRN runs across channels only, so each rule is exact on a window."""
    data = signal.data
    if policy.lrn == "reapply":
        data = F.local_response_norm(
            data, info["size"], info.get("alpha", 1e-4), info.get("beta", 0.75), info.get("k", 1.0)
        )
    elif policy.lrn == "gradient":
        terms = _crop(info["terms"], index, signal.tops, signal.lefts, signal.size)
        data = _lrn_gradient(data, terms, info)
    return _Window(data, signal.tops, signal.lefts)


def _lrn_gradient(signal: Tensor, terms: Tensor, info: dict[str, Any]) -> Tensor:
    """The LRN's vector-Jacobian product on windows, from :func:`graph.lrn_terms`.

    ``g_j = signal_j·s_j^-β − (2αβ/n)·x_j·Σ_c signal_c·x_c·s_c^-β-1`` over the channels ``c``
    whose window holds ``j`` (the transposed window: ``n-1-n//2`` before, ``n//2`` after).
    """
    size, channels = info["size"], signal.shape[1]
    inverse, scaled, x = (terms[:, i * channels : (i + 1) * channels] for i in range(3))
    product = F.pad(signal * scaled, (0, 0, 0, 0, (size - 1) // 2, size // 2))
    spread = product[:, :channels].clone()
    for i in range(1, size):
        spread += product[:, i : i + channels]
    factor = float(2 * info.get("alpha", 1e-4) * info.get("beta", 0.75) / size)
    gradient: Tensor = signal * inverse - factor * x * spread
    return gradient


def _conv_transpose(signal: _Window, info: dict[str, Any], in_hw: Any) -> _Window:
    stride, padding = info["stride"], info["padding"]
    grown = transposed_conv(signal.data, info["weight"], stride, info["groups"], info["dilation"])
    tops = signal.tops * stride[0] - padding[0]
    lefts = signal.lefts * stride[1] - padding[1]
    return _Window(_inside(grown, tops, lefts, in_hw), tops, lefts)


FEW_CHANNELS = 16
"""At most this many output channels (the image's 3), ``F.conv_transpose2d`` runs at a
fraction of its usual speed on CPU; a matrix product and shifted sums do the same work."""
SMALL_MAP = 1024
"""Up to this many pixels per seed, the product runs once for all seeds in pixel order."""


RECYCLED_BYTES = 32 * 2**20
"""glibc's malloc reuses freed blocks up to this size; a larger tensor is mapped fresh from
the OS on every allocation and pays a page fault per 4 KiB on first touch (here a fresh
100 MB tensor costs 45 ms more than a reused one), so each call's tensors stay below it."""


def seeds_per_call(graph: Graph, element_size: int) -> int:
    """How many seeds one :func:`reverse_batch` call takes so that its largest tensor (a
    whole map at most, or the per-tap products of :func:`transposed_conv`) stays a reused
    block: batching more seeds makes each op larger, not faster, once the pages are fresh."""
    per_seed = max(math.prod(shape[1:]) for shape in graph.shapes if len(shape) == 4)
    for node in graph.nodes:
        if node.kind == "conv" and _by_product(node.info["weight"], node.info["groups"]):
            weight, out = node.info["weight"], graph.shapes[node.outputs[0]]
            per_seed = max(per_seed, math.prod(weight.shape[1:]) * out[-2] * out[-1])
    return max(1, RECYCLED_BYTES // (per_seed * element_size))


def _by_product(weight: Tensor, groups: int) -> bool:
    return groups == 1 and (weight.shape[-2:] == (1, 1) or weight.shape[1] <= FEW_CHANNELS)


def transposed_conv(
    data: Tensor,
    weight: Tensor,
    stride: tuple[int, int],
    groups: int = 1,
    dilation: tuple[int, int] = (1, 1),
) -> Tensor:
    """``F.conv_transpose2d`` without padding (the whole grown window), in the formulation
    measured fastest for the shape (``benchmarks/bench_graphs.py --kernels``): one matrix
    product and a shifted sum per filter tap for 1×1 filters and for few output channels
    (1.25–3.7× faster there: the first transposed convolution back to the image, strided
    1×1 shortcuts), the library's transposed convolution otherwise."""
    if _by_product(weight, groups):
        return _product_and_shifts(data, weight, stride, dilation)
    return F.conv_transpose2d(data, weight, None, stride, 0, 0, groups, dilation)


def _product_and_shifts(
    data: Tensor, weight: Tensor, stride: tuple[int, int], dilation: tuple[int, int]
) -> Tensor:
    """Each input pixel times each tap's (C_in, C_out) matrix in one product, then every
    tap's plane added into the output at its offset."""
    count, channels, height, width = data.shape
    outputs, rows, cols = int(weight.shape[1]), int(weight.shape[2]), int(weight.shape[3])
    matrix = weight.reshape(channels, -1)
    if height * width <= SMALL_MAP:  # one product for all seeds: the weights read once
        pixels = data.permute(0, 2, 3, 1).reshape(-1, channels)
        products = (pixels @ matrix).view(count, height, width, -1).permute(0, 3, 1, 2)
    else:  # one product per seed: no copy of a large signal into pixel order
        products = torch.matmul(matrix.t(), data.reshape(count, channels, height * width))
        products = products.view(count, -1, height, width)
    if (rows, cols) == (1, 1) and stride == (1, 1):
        return products
    taps = products.reshape(count, outputs, rows, cols, height, width)
    span_h, span_w = (height - 1) * stride[0] + 1, (width - 1) * stride[1] + 1
    grown = data.new_zeros(
        (count, outputs, span_h + dilation[0] * (rows - 1), span_w + dilation[1] * (cols - 1))
    )
    for i in range(rows):
        for j in range(cols):
            top, left = i * dilation[0], j * dilation[1]
            grown[:, :, top : top + span_h : stride[0], left : left + span_w : stride[1]] += taps[
                :, :, i, j
            ]
    return grown


def _avg_unpool(signal: _Window, info: dict[str, Any], in_hw: Any) -> _Window:
    """Average pooling's transpose: each output's share (1 / its divisor) spread over its
    kernel window by a transposed convolution with a kernel of ones."""
    kernel, stride, padding = info["kernel"], info["stride"], info["padding"]
    zeros = torch.zeros_like(signal.tops)
    share = _crop(info["scale"], zeros, signal.tops, signal.lefts, signal.size)
    data = signal.data * share
    count, channels, height, width = data.shape
    ones = data.new_ones((1, 1, *kernel))
    grown = F.conv_transpose2d(data.reshape(count * channels, 1, height, width), ones, None, stride)
    grown = grown.reshape(count, channels, *grown.shape[-2:])
    tops = signal.tops * stride[0] - padding[0]
    lefts = signal.lefts * stride[1] - padding[1]
    return _Window(_inside(grown, tops, lefts, in_hw), tops, lefts)


def _unpool(signal: _Window, info: dict[str, Any], index: Tensor, in_hw: Any) -> _Window:
    """Max unpooling through the recorded switches, on the window.

    Each switch is kept as its row and column offset inside its pooling window
    (:func:`graph.switch_offsets`), so its place in the input window is the same arithmetic
    for every seed, wherever its window lies. Outside the map the signal is zero (every
    step keeps it so), and there the offsets are 0: those zeros land inside the window."""
    kernel, stride, padding, dilation = (
        info["kernel"], info["stride"], info["padding"], info["dilation"],
    )  # fmt: skip
    size = signal.size
    in_h = (size[0] - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1
    in_w = (size[1] - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1
    data = signal.data
    if "keep" in info:
        data = data * _crop(info["keep"], index, signal.tops, signal.lefts, size)
    count, channels = data.shape[:2]
    offsets = _crop(info["offsets"], index, signal.tops, signal.lefts, size)
    device = data.device
    corners = (torch.arange(size[0], device=device) * (stride[0] * in_w)).view(-1, 1) + (
        torch.arange(size[1], device=device) * stride[1]
    )
    local = offsets[:, :channels] * in_w + offsets[:, channels:] + corners
    flat = data.new_zeros((count, channels, in_h * in_w))
    flat.scatter_add_(2, local.flatten(2), data.flatten(2))
    tops = signal.tops * stride[0] - padding[0]
    lefts = signal.lefts * stride[1] - padding[1]
    return _Window(flat.view(count, channels, in_h, in_w), tops, lefts)


def _unsplit(arriving: list[_Window | None], widths: list[int], channels: int) -> _Window:
    """The input of a channel split: each part's window at its channels, summed."""
    total: _Window | None = None
    start = 0
    for window, width in zip(arriving, widths, strict=True):
        if window is not None:
            data = window.data
            padded = F.pad(data, (0, 0, 0, 0, start, channels - start - width))
            total = _sum(total, _Window(padded, window.tops, window.lefts))
        start += width
    assert total is not None  # some output has a signal, or the node was skipped
    return total


# -- windows ---------------------------------------------------------------------------------


def _sum(into: _Window | None, part: _Window) -> _Window:
    """Two signals at one tensor, summed on the smallest window holding both."""
    if into is None:
        return part
    if (
        into.size == part.size
        and torch.equal(into.tops, part.tops)
        and torch.equal(into.lefts, part.lefts)
    ):
        return _Window(into.data + part.data, into.tops, into.lefts)
    for outer, inner in ((into, part), (part, into)):
        shift = _uniform_shift(outer, inner)
        if shift is not None:  # a residual branch's window inside the other's: add in place
            data = outer.data.clone()
            (dy, dx), (height, width) = shift, inner.size
            data[..., dy : dy + height, dx : dx + width] += inner.data
            return _Window(data, outer.tops, outer.lefts)
    tops = torch.minimum(into.tops, part.tops)
    lefts = torch.minimum(into.lefts, part.lefts)
    height = int(torch.maximum(into.tops + into.size[0], part.tops + part.size[0]).sub(tops).max())
    width = int(
        torch.maximum(into.lefts + into.size[1], part.lefts + part.size[1]).sub(lefts).max()
    )
    return _Window(
        _reframe(into, tops, lefts, height, width) + _reframe(part, tops, lefts, height, width),
        tops,
        lefts,
    )


def _uniform_shift(outer: _Window, inner: _Window) -> tuple[int, int] | None:
    """Where ``inner`` lies in ``outer`` when it lies inside it at the same place for every
    seed; None otherwise."""
    rows, cols = set((inner.tops - outer.tops).tolist()), set((inner.lefts - outer.lefts).tolist())
    if len(rows) != 1 or len(cols) != 1:
        return None
    dy, dx = rows.pop(), cols.pop()
    (height, width), (outer_h, outer_w) = inner.size, outer.size
    if dy < 0 or dx < 0 or dy + height > outer_h or dx + width > outer_w:
        return None
    return dy, dx


def _cut_to_map(window: _Window, hw: Any) -> _Window:
    """A window larger than its map, cut to the map (outside it the signal is zero)."""
    height, width = window.size
    map_h, map_w = int(hw[0]), int(hw[1])
    if height <= map_h and width <= map_w:
        return window
    new_h, new_w = min(height, map_h), min(width, map_w)
    tops = window.tops.clamp(0, map_h - new_h)
    lefts = window.lefts.clamp(0, map_w - new_w)
    return _Window(_reframe(window, tops, lefts, new_h, new_w), tops, lefts)


def _reframe(window: _Window, tops: Tensor, lefts: Tensor, height: int, width: int) -> Tensor:
    """``window``'s data on the frame at ``tops, lefts`` of size ``height × width``."""
    rows = (window.tops - tops).tolist()
    cols = (window.lefts - lefts).tolist()
    data = window.data
    h, w = window.size
    if len(set(rows)) == 1 and len(set(cols)) == 1:  # the same shift for every seed
        dy, dx = rows[0], cols[0]
        return F.pad(data, (dx, width - w - dx, dy, height - h - dy))
    out = data.new_zeros((*data.shape[:-2], height, width))
    for n, (dy, dx) in enumerate(zip(rows, cols, strict=True)):
        r0, c0 = max(dy, 0), max(dx, 0)
        r1, c1 = min(dy + h, height), min(dx + w, width)
        if r1 > r0 and c1 > c0:
            out[n, ..., r0:r1, c0:c1] = data[n, ..., r0 - dy : r1 - dy, c0 - dx : c1 - dx]
    return out


def _crop(source: Tensor, image_index: Tensor, tops: Tensor, lefts: Tensor, size: Any) -> Tensor:
    """``source[b, :, top:top+h, left:left+w]`` per seed, zero outside the map."""
    height, width = int(size[0]), int(size[1])
    pad = (
        max(0, -int(lefts.min())),
        max(0, int(lefts.max()) + width - source.shape[3]),
        max(0, -int(tops.min())),
        max(0, int(tops.max()) + height - source.shape[2]),
    )
    padded = F.pad(source, pad) if any(pad) else source
    rows0, cols0 = tops + pad[2], lefts + pad[0]
    parts = [
        padded[b, :, r : r + height, c : c + width]
        for b, r, c in zip(image_index.tolist(), rows0.tolist(), cols0.tolist(), strict=True)
    ]
    return torch.stack(parts)


def _inside(signal: Tensor, tops: Tensor, lefts: Tensor, hw: Any) -> Tensor:
    """Zero the window positions that fall in the layer's padding, outside the map."""
    device = signal.device
    rows = tops.to(device).view(-1, 1) + torch.arange(signal.shape[2], device=device)
    cols = lefts.to(device).view(-1, 1) + torch.arange(signal.shape[3], device=device)
    row_ok = (rows >= 0) & (rows < int(hw[0]))
    col_ok = (cols >= 0) & (cols < int(hw[1]))
    if bool(row_ok.all()) and bool(col_ok.all()):
        return signal
    mask = (row_ok[:, :, None] & col_ok[:, None, :]).unsqueeze(1)
    return signal * mask.to(signal.dtype)


def _paste(window: _Window, hw: Any) -> Tensor:
    height, width = int(hw[0]), int(hw[1])
    zeros = torch.zeros_like(window.tops)
    return _reframe(window, zeros, zeros, height, width)
