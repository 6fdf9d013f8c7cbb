"""Writing what the figures show: PNG images and JSON manifests, each written atomically.

Both go through :func:`~deconvnet.storage.atomic.atomic_write`: a temporary file beside
the target, moved into place with ``os.replace``, so a crash or a full disk never leaves a
half-written file under the name a reader looks for; files get the umask's mode (0644
under umask 0022).
"""

from __future__ import annotations

import io
import json
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from deconvnet.errors import InputError
from deconvnet.storage.atomic import atomic_write

PALETTE_COLOURS = 256
"""Colours of a page chart saved with ``palette`` (PNG's palette size)."""


def save_png(array: np.ndarray, path: str | os.PathLike[str], *, palette: bool = False) -> Path:
    """Write a uint8 ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` array as PNG, atomically.

    Parent folders are created; a crash never leaves a half-written file at ``path``.
    ``palette``: an RGB chart for a web page, stored with its 256 most used colours (no
    dithering; a line chart's file shrinks 2.5x, its anti-aliased edges a shade coarser).
    """
    _check_png_array(array)
    image = Image.fromarray(np.ascontiguousarray(array))
    if palette and image.mode == "RGB":
        image = image.quantize(PALETTE_COLOURS, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return atomic_write(Path(path), lambda handle: image.save(handle, format="PNG"))


def page_names(stem: str, count: int) -> list[str]:
    """File names of a picture in ``count`` pages: ``stem.png`` alone, else
    ``stem_page1.png`` … ``stem_pageN.png``."""
    if count == 1:
        return [f"{stem}.png"]
    return [f"{stem}_page{number}.png" for number in range(1, count + 1)]


class PngWriter:
    """:func:`save_png` on background threads, for figures that write many files: Pillow
    releases the GIL while it encodes and the OS while it writes, so the tiles of one map
    are written while the next map's are drawn. Leaving the ``with`` block waits for every
    write and raises the first error (a file that failed is not left behind, as with
    :func:`save_png`)."""

    QUEUED = 256
    """Writes waiting at most: beyond, :meth:`save` waits for the oldest (memory stays
    bounded, and a failed write surfaces early)."""

    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="png")
        self._pending: deque[Future[Path]] = deque()

    def __enter__(self) -> PngWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        try:
            while self._pending and kind is None:  # after an error, that error is the story
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def save(self, array: np.ndarray, path: str | os.PathLike[str]) -> Path:
        """Queue ``array`` for ``path`` (checked now, written soon); returns ``path``."""
        _check_png_array(array)
        self._pending.append(self._pool.submit(save_png, array, path))
        while len(self._pending) > self.QUEUED:
            self._pending.popleft().result()
        return Path(path)


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 ``(H, W, 3)`` array encoded as PNG in memory (Jupyter, HTML data URLs)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def _check_png_array(array: np.ndarray) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise InputError(f"save_png needs a uint8 array, got {kind}")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"save_png needs (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as JSON atomically: sorted keys, 2-space indent, trailing newline.

    NumPy and torch scalars and arrays, tuples, paths and dataclasses are converted to
    plain JSON values; NaN and infinity are refused (they are not JSON).
    """
    try:
        text = json.dumps(_jsonable(obj), sort_keys=True, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise InputError(f"cannot write {path} as JSON: {exc}") from exc
    data = text.encode("utf-8")
    return atomic_write(Path(path), lambda handle: handle.write(data))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {_jsonable(key): _jsonable(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj) if isinstance(obj, set | frozenset) else obj
        return [_jsonable(item) for item in items]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray | np.generic):
        return _jsonable(obj.tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    return obj


def write_bytes(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` to ``path`` atomically (a copied tile, say); parent folders created."""
    return atomic_write(Path(path), lambda handle: handle.write(data))
