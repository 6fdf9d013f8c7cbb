"""Exact compact tensors: a float32 codebook and one uint8 index per value.

Deep Compression (Han et al. 2016) prunes a network and quantises every weight tensor to
at most 256 shared values. Storing such a tensor as its codebook plus ``uint8`` indices
takes a quarter of the float32 bytes, and decoding is a table look-up, so the decoded
tensor is bit-equal to the original. Tensors for which this is not smaller (biases, whose
values are all distinct) are stored as they are.

A stored tensor ``key`` becomes ``key.codebook`` (float32, 1-D, values sorted) and
``key.indices`` (uint8, the tensor's shape). A file in this form says so in its
safetensors metadata: ``{ENCODING_KEY: ENCODING}``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from deconvnet.errors import WeightsError

ENCODING_KEY = "deconvnet.encoding"
ENCODING = "codebook-uint8"
CODEBOOK_SUFFIX = ".codebook"
INDICES_SUFFIX = ".indices"
MAX_CODES = 256
"""Distinct values a uint8 index can address."""
FLOAT32_BYTES = 4


def encode(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each float32 tensor as codebook + indices where that is smaller, others unchanged.

    Values are told apart by their bit patterns, so ``-0.0`` and ``0.0`` stay distinct and
    :func:`decode` gives back the very same bits.
    """
    stored: dict[str, Tensor] = {}
    for key, tensor in state.items():
        if key.endswith((CODEBOOK_SUFFIX, INDICES_SUFFIX)):
            raise WeightsError(f"cannot encode {key!r}: the name collides with the stored form")
        encoded = _encoded(tensor) if tensor.dtype == torch.float32 else None
        if encoded is None:
            stored[key] = tensor.contiguous()
        else:
            stored[key + CODEBOOK_SUFFIX], stored[key + INDICES_SUFFIX] = encoded
    return stored


def _encoded(tensor: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(codebook, indices)`` of ``tensor``, or ``None`` when that would not be smaller."""
    patterns, inverse = torch.unique(
        tensor.contiguous().view(torch.int32), sorted=True, return_inverse=True
    )
    codes = patterns.numel()
    encoded_bytes = FLOAT32_BYTES * codes + tensor.numel()
    if codes > MAX_CODES or encoded_bytes >= FLOAT32_BYTES * tensor.numel():
        return None
    values = patterns.view(torch.float32)
    order = torch.argsort(values, stable=True)  # readable codebooks: ascending values
    rank = torch.empty_like(order)
    rank[order] = torch.arange(codes)
    return values[order].contiguous(), rank[inverse].to(torch.uint8)


def decode(stored: Mapping[str, Tensor], *, source: str) -> dict[str, Tensor]:
    """Invert :func:`encode`: every ``key.codebook``/``key.indices`` pair becomes ``key``.

    Raises
    ------
    WeightsError
        A pair is incomplete, has the wrong dtypes or ranks, or an index points past its
        codebook; the message names ``source`` and the tensor.
    """
    state: dict[str, Tensor] = {}
    for key, tensor in stored.items():
        if key.endswith(CODEBOOK_SUFFIX):
            continue
        if not key.endswith(INDICES_SUFFIX):
            state[key] = tensor
            continue
        name = key.removesuffix(INDICES_SUFFIX)
        codebook = stored.get(name + CODEBOOK_SUFFIX)
        if codebook is None:
            raise WeightsError(f"{source}: {key} has no {name}{CODEBOOK_SUFFIX}")
        state[name] = _decoded(codebook, tensor, f"{source}: {name}")
    orphans = [
        key
        for key in stored
        if key.endswith(CODEBOOK_SUFFIX)
        and key.removesuffix(CODEBOOK_SUFFIX) + INDICES_SUFFIX not in stored
    ]
    if orphans:
        raise WeightsError(f"{source}: {orphans[0]} has no {INDICES_SUFFIX} tensor")
    return state


def _decoded(codebook: Tensor, indices: Tensor, where: str) -> Tensor:
    """``codebook[indices]`` after checking what a corrupt file could get wrong."""
    if codebook.dtype != torch.float32 or codebook.dim() != 1:
        raise WeightsError(
            f"{where}: codebook must be 1-D float32, got {codebook.dtype} {tuple(codebook.shape)}"
        )
    if indices.dtype != torch.uint8:
        raise WeightsError(f"{where}: indices must be uint8, got {indices.dtype}")
    if indices.numel() and int(indices.max()) >= codebook.numel():
        raise WeightsError(
            f"{where}: index {int(indices.max())} points past its {codebook.numel()}-value "
            "codebook; the file is corrupt"
        )
    return codebook[indices.long()]
