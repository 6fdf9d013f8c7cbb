"""A faster reverse pass for single-unit seeds: receptive-field windows on the recorded graph.

A seed with one non-zero activation reaches only its receptive field: at every tensor the
signal is zero outside a window that grows by each layer's kernel and stride. This module
runs the reverse pass of a recorded :class:`~deconvnet.engine.graph.Graph` on those windows
only (:class:`~deconvnet.engine.window.Window`) — each node's own reverse step from the op
table, the same transposed convolutions, unpooling and rules as the general path, on
tensors of the window's size — batched over all seeds. Branches are followed as the graph
has them: an addition sends its window down both inputs, a concatenation splits it on
channels, and where branches meet again their windows are summed on the smallest window
holding both. A window that outgrows its map is cut to the map. The general autograd path
is this module's oracle in the tests.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from deconvnet.engine.ops.op import IMAGE_RANK, ReverseStep, SlidingNode
from deconvnet.engine.rounding import Rounding
from deconvnet.engine.rules import ReversePolicy
from deconvnet.engine.window import Window, cut_to_map, sum_windows

if TYPE_CHECKING:
    from deconvnet.engine.graph import Graph

RECYCLED_BYTES = 32 * 2**20
"""glibc's malloc reuses freed blocks up to this size; a larger tensor is mapped fresh from
the OS on every allocation and pays a page fault per 4 KiB on first touch (here a fresh
100 MB tensor costs 45 ms more than a reused one), so each call's tensors stay below it."""


def reverse_windows(
    graph: Graph,
    image_index: Tensor,
    channels: Tensor,
    positions: Tensor,
    values: Tensor,
    policy: ReversePolicy,
    rounding: Rounding | None = None,
    *,
    stop: int = 0,
) -> Window:
    """Windowed reverse passes for N single-unit seeds, down to the graph's value ``stop``
    (0: the input image; an upstream layer's output, whose ops below are not run).

    Parameters
    ----------
    image_index, channels : LongTensor (N,) — batch image and map of each seed.
    positions : LongTensor (N, 2) — the seeded unit.
    values : Tensor (N,) — the seed values; the reverse pass runs in their dtype.
    rounding : given, it follows the pass and ends holding each projection's estimated
        rounding error (:mod:`~deconvnet.engine.rounding`, ``rounding.projected``).

    Returns
    -------
    Each seed's signal at ``stop`` on its window (zero outside it; a 1×1 window of zeros
    where no signal reaches it): at the image, :func:`~deconvnet.engine.window.paste`
    gives the general path's projections.
    """
    count = channels.shape[0]
    layer_shape = graph.shapes[graph.layer]
    seed = values.new_zeros((count, layer_shape[1], 1, 1))
    seed[torch.arange(count), channels, 0, 0] = values
    step = ReverseStep(image_index.cpu(), policy, graph.shapes)
    signals: dict[int, Window] = {
        graph.layer: Window(seed, positions[:, 0].cpu().clone(), positions[:, 1].cpu().clone())
    }
    if rounding is not None:
        rounding.start(graph.layer, seed)
    for node in reversed(graph.nodes):
        if node.outputs and max(node.outputs) <= stop:
            break  # values are numbered in forward order: nothing above stop is left
        arriving = [signals.pop(value, None) for value in node.outputs]
        if all(window is None for window in arriving):
            continue
        error = rounding.take(node.outputs, arriving) if rounding is not None else None
        signal = next(window for window in arriving if window is not None)
        for source, window in node.step_back(arriving, step):
            if source is not None and window is not None:
                window = cut_to_map(window, graph.shapes[source][-2:])
                before = signals.get(source)
                signals[source] = sum_windows(before, window)
                if rounding is not None and error is not None:
                    departing, known = rounding.through(node, signal, window, error)
                    rounding.merge(source, before, window, departing, known)
    reached = signals.get(stop)
    if rounding is not None:
        rounding.finish(stop, reached)
    if reached is None:  # the signal does not reach ``stop`` (the layer does not depend on it)
        nowhere = torch.zeros(count, dtype=torch.long)
        zeros = values.new_zeros((count, *graph.shapes[stop][1:-2], 1, 1))
        return Window(zeros, nowhere, nowhere)
    return reached


def seeds_per_call(graph: Graph, element_size: int) -> int:
    """How many seeds one :func:`reverse_windows` call takes so that its largest tensor (a
    window at most as large as its map, the image a run is pasted to, or a node's own
    temporaries, such as the per-tap products of a transposed convolution) stays a reused
    block: batching more seeds makes each op larger, not faster, once the pages are fresh."""
    shapes = window_shapes(graph)
    per_seed = max(math.prod(shape[1:]) for shape in shapes if len(shape) == IMAGE_RANK)
    for node in graph.nodes:
        per_seed = max(per_seed, node.scratch_per_seed(shapes))
    return max(1, RECYCLED_BYTES // (per_seed * element_size))


def window_shapes(graph: Graph) -> list[tuple[int, ...]]:
    """The recorded shapes with H and W the largest window a single-unit seed has there:
    grown by every sliding window on the way down, cut to the map (the image is pasted
    whole). Where branches meet, the larger of their windows (their union is usually one
    of them: a residual branch's field holds its shortcut's)."""
    sizes: dict[int, tuple[int, int]] = {graph.layer: (1, 1)}
    for node in reversed(graph.nodes):
        arriving = [sizes[value] for value in node.outputs if value in sizes]
        if not arriving:
            continue
        height, width = max(size[0] for size in arriving), max(size[1] for size in arriving)
        if isinstance(node, SlidingNode):
            window = node.window
            height = (
                (height - 1) * window.stride[0] + window.dilation[0] * (window.kernel[0] - 1) + 1
            )
            width = (width - 1) * window.stride[1] + window.dilation[1] * (window.kernel[1] - 1) + 1
        for source in node.inputs:
            if source is None or len(graph.shapes[source]) != IMAGE_RANK:
                continue
            map_h, map_w = graph.shapes[source][-2:]
            held = sizes.get(source, (0, 0))
            sizes[source] = (max(held[0], min(height, map_h)), max(held[1], min(width, map_w)))
    return [
        shape
        if value == 0 or value not in sizes or len(shape) != IMAGE_RANK
        else (*shape[:-2], *sizes[value])
        for value, shape in enumerate(graph.shapes)
    ]
