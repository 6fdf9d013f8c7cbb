"""Decoding within a memory budget (deconvnet.inputs.budget)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deconvnet.inputs import budget
from deconvnet.inputs.budget import ImageTooLargeError, decode_cost, decode_within
from deconvnet.inputs.images import decode_image


def encoded(size: tuple[int, int], kind: str) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind)
    return buffer.getvalue()


def test_within_the_budget_the_decode_is_the_usual_one() -> None:
    data = encoded((64, 48), "PNG")
    assert np.array_equal(
        decode_within(data, "x", budget=decode_cost(64, 48)), decode_image(data, "x")
    )


def test_a_png_over_the_budget_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encoded((64, 48), "PNG")
    monkeypatch.setattr(budget, "decode_image", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(ImageTooLargeError, match="64x48 pixels"):
        decode_within(data, "x", budget=decode_cost(64, 48) - 1)


def test_a_jpeg_over_the_budget_decodes_at_a_smaller_scale() -> None:
    data = encoded((64, 48), "JPEG")
    half = decode_within(data, "x", budget=decode_cost(32, 24))
    eighth = decode_within(data, "x", budget=decode_cost(8, 6))
    assert half.shape == (24, 32, 3) and eighth.shape == (6, 8, 3)
    with pytest.raises(ImageTooLargeError):
        decode_within(data, "x", budget=decode_cost(8, 6) - 1)
