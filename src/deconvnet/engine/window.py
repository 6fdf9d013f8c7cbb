"""Signals on receptive-field windows: the data type of the windowed reverse pass.

A seed with one non-zero activation reaches only its receptive field: at every tensor the
signal is zero outside a window. A :class:`Window` holds that window's data for N seeds at
once, each seed's window at its own place in the map; the helpers here move data between
windows and maps. Every window of a call has the same size for all its seeds (its place
differs), so each op runs once per batch of seeds. Values outside the map are kept at zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Window:
    """The signal at one tensor for N seeds: ``data`` (N, C..., h, w) holds map rows
    ``tops[n]:tops[n]+h`` and columns ``lefts[n]:lefts[n]+w`` (they may leave the map,
    where the data is zero)."""

    data: Tensor
    tops: Tensor
    lefts: Tensor

    @property
    def size(self) -> tuple[int, int]:
        return int(self.data.shape[-2]), int(self.data.shape[-1])

    def with_data(self, data: Tensor) -> Window:
        """The same place, other data (an op that keeps H and W)."""
        return Window(data, self.tops, self.lefts)

    def part(self, n: int, box: tuple[int, int, int, int]) -> Tensor:
        """Seed ``n``'s data on map rows ``box[0]:box[2]`` and columns ``box[1]:box[3]``,
        zero where the window does not reach."""
        top, left, bottom, right = box
        row, col = int(self.tops[n]), int(self.lefts[n])
        (height, width), data = self.size, self.data[n]
        if box == (row, col, row + height, col + width):
            return data
        r0, r1 = max(top, row), min(bottom, row + height)
        c0, c1 = max(left, col), min(right, col + width)
        out = data.new_zeros((*data.shape[:-2], bottom - top, right - left))
        if r1 > r0 and c1 > c0:
            out[..., r0 - top : r1 - top, c0 - left : c1 - left] = data[
                ..., r0 - row : r1 - row, c0 - col : c1 - col
            ]
        return out


def sum_windows(into: Window | None, part: Window) -> Window:
    """Two signals at one tensor, summed on the smallest window holding both."""
    if into is None:
        return part
    if (
        into.size == part.size
        and torch.equal(into.tops, part.tops)
        and torch.equal(into.lefts, part.lefts)
    ):
        return Window(into.data + part.data, into.tops, into.lefts)
    for outer, inner in ((into, part), (part, into)):
        shift = _uniform_shift(outer, inner)
        if shift is not None:  # a residual branch's window inside the other's: add in place
            data = outer.data.clone()
            (dy, dx), (height, width) = shift, inner.size
            data[..., dy : dy + height, dx : dx + width] += inner.data
            return Window(data, outer.tops, outer.lefts)
    tops = torch.minimum(into.tops, part.tops)
    lefts = torch.minimum(into.lefts, part.lefts)
    height = int(torch.maximum(into.tops + into.size[0], part.tops + part.size[0]).sub(tops).max())
    width = int(
        torch.maximum(into.lefts + into.size[1], part.lefts + part.size[1]).sub(lefts).max()
    )
    return Window(
        reframe(into, tops, lefts, height, width) + reframe(part, tops, lefts, height, width),
        tops,
        lefts,
    )


def _uniform_shift(outer: Window, inner: Window) -> tuple[int, int] | None:
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


def cut_to_map(window: Window, hw: Any) -> Window:
    """A window larger than its map, cut to the map (outside it the signal is zero)."""
    height, width = window.size
    map_h, map_w = int(hw[0]), int(hw[1])
    if height <= map_h and width <= map_w:
        return window
    new_h, new_w = min(height, map_h), min(width, map_w)
    tops = window.tops.clamp(0, map_h - new_h)
    lefts = window.lefts.clamp(0, map_w - new_w)
    return Window(reframe(window, tops, lefts, new_h, new_w), tops, lefts)


def reframe(window: Window, tops: Tensor, lefts: Tensor, height: int, width: int) -> Tensor:
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


def crop(source: Tensor, image_index: Tensor, tops: Tensor, lefts: Tensor, size: Any) -> Tensor:
    """``source[b, :, top:top+h, left:left+w]`` per seed, zero outside the map (only the
    seeds' own windows are copied: padding the whole source costs more than the crops; a
    window that is the whole map is :func:`per_seed`, a view for seeds of one image)."""
    height, width = int(size[0]), int(size[1])
    map_h, map_w = int(source.shape[2]), int(source.shape[3])
    if covers_map(tops, lefts, size, source.shape[-2:]):
        return per_seed(source, image_index)  # the whole map: no copy
    seeds = zip(image_index.tolist(), tops.tolist(), lefts.tolist(), strict=True)
    if (
        int(tops.min()) >= 0
        and int(lefts.min()) >= 0
        and (int(tops.max()) + height <= map_h and int(lefts.max()) + width <= map_w)
    ):
        return torch.stack([source[b, :, r : r + height, c : c + width] for b, r, c in seeds])
    out = source.new_zeros((len(image_index), *source.shape[1:-2], height, width))
    for n, (b, r, c) in enumerate(seeds):
        r0, r1 = max(r, 0), min(r + height, map_h)
        c0, c1 = max(c, 0), min(c + width, map_w)
        if r1 > r0 and c1 > c0:
            out[n, ..., r0 - r : r1 - r, c0 - c : c1 - c] = source[b, ..., r0:r1, c0:c1]
    return out


def covers_map(tops: Tensor, lefts: Tensor, size: Any, hw: Any) -> bool:
    """Every seed's window of ``size`` at ``tops, lefts`` is the whole map ``hw``."""
    return (
        (int(size[0]), int(size[1])) == (int(hw[0]), int(hw[1]))
        and not tops.any()
        and not lefts.any()
    )


def per_seed(source: Tensor, image_index: Tensor) -> Tensor:
    """``source[image_index]``: a view when every seed is of one image (a read-only
    operand, broadcast over the seeds), else a copy."""
    first = int(image_index[0]) if len(image_index) else 0
    if bool((image_index == first).all()):
        return source[first : first + 1].expand(len(image_index), *source.shape[1:])
    return source.index_select(0, image_index.to(source.device))


def inside(signal: Tensor, tops: Tensor, lefts: Tensor, hw: Any) -> Tensor:
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


def paste(window: Window, hw: Any) -> Tensor:
    """The whole map (N, C, H, W) holding ``window``'s data, zero elsewhere."""
    height, width = int(hw[0]), int(hw[1])
    zeros = torch.zeros_like(window.tops)
    return reframe(window, zeros, zeros, height, width)
