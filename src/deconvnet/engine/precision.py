"""The reverse pass's number type: full precision, or a reduced type for pictures.

A projection is shown as an 8-bit image. A reverse pass in bfloat16 or float16 gives the
same picture to within a level or two (measured by
:func:`deconvnet.figures.display.display_match`) at about half the cost where the hardware
has native kernels for it. The forward pass always runs in the model's own dtype, so the
seeded units, their values, the ReLU masks and the max-pool switches are exactly those of
full precision; only the reverse pass — transposed convolutions, unpooling, rectification,
sums — runs in the reduced type (oneDNN's and cuDNN's reduced-precision convolutions
accumulate in float32 and round once per output).

- ``float32`` — full precision: the reverse pass runs in the forward's own dtype (float32
  for a float32 model; a float64 model stays float64). Exact; the API's default.
- ``bfloat16`` — float32's range with 8 significant bits.
- ``float16`` — 11 significant bits, a range of 6e-5…65504: seeds are scaled to 1 and the
  result scaled back, so a tiny activation does not underflow.
- ``auto`` — bfloat16 where the device computes it natively (a CPU with AVX-512 BF16 or
  AMX, a CUDA device of compute capability 8.0 or later), full precision elsewhere. The
  faces' default.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

PRECISIONS = ("float32", "bfloat16", "float16", "auto")
"""The names ``precision=`` takes, in the order the command line lists them."""
FULL_PRECISION = "float32"
"""The API's default: the reverse pass in the forward's own dtype, exact."""
FACES_PRECISION = "auto"
"""The command line's and explorer's default: pictures, at the speed the device allows."""
_REDUCED = {"bfloat16": torch.bfloat16, "float16": torch.float16}
BF16_CUDA_CAPABILITY = (8, 0)
"""Ampere and later have bfloat16 tensor cores."""


def _cpu_bfloat16() -> bool:
    """AVX-512 BF16 or AMX (torch's own CPU feature probes)."""
    probes: list[Callable[[], bool]] = [
        getattr(torch.cpu, name)
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        if hasattr(torch.cpu, name)
    ]
    return any(bool(probe()) for probe in probes)


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (not emulated through float32)."""
    if device.type == "cpu":
        return _cpu_bfloat16()
    if device.type == "cuda":
        return tuple(torch.cuda.get_device_capability(device)) >= BF16_CUDA_CAPABILITY
    return False


def check(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; a ValueError naming them if not."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


def reverse_dtype(precision: str, forward: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype the reverse pass runs in, for a forward pass in ``forward`` on ``device``."""
    check(precision)
    if precision == "auto":
        precision = "bfloat16" if native_bfloat16(device) else FULL_PRECISION
    return _REDUCED.get(precision, forward)


def dtype_name(dtype: torch.dtype) -> str:
    """``"bfloat16"`` for ``torch.bfloat16``: the name manifests record."""
    return str(dtype).removeprefix("torch.")


def is_reduced(dtype: torch.dtype, forward: torch.dtype) -> bool:
    """The reverse pass runs in fewer bits than the forward."""
    return dtype != forward and dtype in _REDUCED.values()


# -- display-exact: what a reduced-precision projection must hold ------------------------------

DISPLAY_HALF_RANGE = 127
"""A projection is shown (:func:`deconvnet.figures.render.show`, the ``rgb`` view) with
zero at mid-grey and its largest ``|value|`` 127 levels away."""
DISPLAY_PSNR = 40.0
"""The 8-bit rendering's PSNR against full precision's, at least (dB)."""
DISPLAY_LEVELS = 2
DISPLAY_SHARE = 0.99
"""At least this share of the rendering's pixels within ``DISPLAY_LEVELS`` of full
precision's."""


def expected_display_exact(images: Tensor, variance: Tensor) -> Tensor:
    """Whether each reduced-precision projection (N, C, H, W) is expected to pass the
    display check, from its estimated relative error variance (N,)
    (:mod:`deconvnet.engine.rounding`), without its full-precision twin.

    The error is taken as Gaussian over the projection's non-zero values with the
    estimated RMS, in display levels (the largest ``|value|`` at 127); over those values
    (the unit's field, as a tile zoomed to it shows them: zeros outside stay grey in both)
    its mean square gives the PSNR, and its tail beyond 2 levels on any of a pixel's
    channels the share of pixels off by more. An all-zero projection is grey in both."""
    flat = images.detach().flatten(1)
    peak = torch.maximum(flat.amax(dim=1), -flat.amin(dim=1)).float()
    nonzero = torch.count_nonzero(flat, dim=1).clamp_min(1)
    energy = torch.linalg.vector_norm(flat, dim=1).float().square()
    rms = torch.sqrt(variance.to(flat.device) * energy / nonzero)
    sigma = DISPLAY_HALF_RANGE * rms / peak.clamp_min(torch.finfo(torch.float32).tiny)
    psnr = 10 * torch.log10(255.0**2 / sigma.square().clamp_min(1e-12))
    beyond = torch.special.erfc(DISPLAY_LEVELS / (sigma * math.sqrt(2)).clamp_min(1e-12))
    off = (images.shape[1] * beyond).clamp(max=1.0)
    passes: Tensor = (peak == 0) | ((psnr >= DISPLAY_PSNR) & (off <= 1 - DISPLAY_SHARE))
    return passes
