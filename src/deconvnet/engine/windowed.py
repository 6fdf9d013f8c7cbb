"""A faster reverse pass for single-unit seeds on chain-shaped networks.

A seed with one non-zero activation reaches only its receptive field: at every level the
signal is zero outside a window that grows by each layer's kernel and stride. For the
usual conv–ReLU–pool–LRN stacks (CaffeNet, ZFNet, VGG) this module runs the reverse pass on
those windows only — the same transposed convolutions, unpooling and rules as the general
path, on tensors of the window's size — batched over all seeds. Which ops are covered is
deliberately narrow; :func:`plan` returns ``None`` for anything else and the engine falls
back to the general autograd path, which the tests use as this module's oracle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.engine.hooks import HandleList, LayerReached
from deconvnet.engine.policies import ReversePolicy
from deconvnet.engine.rules import overwrite_keep, pool_switches

PASS_THROUGH = (nn.Dropout, nn.Identity)


@dataclass
class _Step:
    """One module of the chain, with what its reverse needs from the forward pass."""

    module: nn.Module
    in_hw: tuple[int, int]
    saved: Tensor | None = None  # ReLU mask, LRN input (for its gradient) or pool switches
    keep: Tensor | None = None  # overwrite mask over pooled positions


@dataclass
class Chain:
    """The forward pass of a chain network up to the layer, ready for windowed reverses."""

    steps: list[_Step]
    output: Tensor


def plan(model: nn.Module, x: Tensor, layer: nn.Module, policy: ReversePolicy) -> Chain | None:
    """Record the forward pass if ``model`` up to ``layer`` is a plain chain we cover."""
    if x.dim() != 4:
        return None
    calls: list[tuple[nn.Module, Tensor, Tensor | None, int]] = []
    outputs: list[tuple[Tensor, int]] = []
    leaves = [m for m in model.modules() if not list(m.children())]

    def before(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if len(inputs) != 1 or not isinstance(inputs[0], Tensor):
            raise _NotAChain
        inp = inputs[0]
        calls.append((module, inp, _record(module, inp, policy), inp._version))

    def after(module: nn.Module, inputs: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            raise _NotAChain
        outputs.append((output, output._version))
        if module is layer:
            raise LayerReached

    with HandleList() as handles, torch.no_grad():
        for module in leaves:
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after))
        try:
            model(x)
        except LayerReached:
            pass
        except (_NotAChain, RuntimeError):
            return None
    if not calls or calls[-1][0] is not layer or len(outputs) != len(calls):
        return None
    if outputs[-1][0].dim() != 4:
        return None
    steps = []
    previous, previous_version = x, x._version
    for (module, inp, saved, version), (out, out_version) in zip(calls, outputs, strict=True):
        # Same tensor, untouched in between: an in-place op outside a module breaks the chain.
        if inp is not previous or version != previous_version or not _covered(module):
            return None
        step = _Step(module, (inp.shape[2], inp.shape[3]), saved)
        if isinstance(module, nn.MaxPool2d) and policy.collisions == "overwrite":
            step.keep = overwrite_keep(_recorded(saved), inp.shape).to(out.dtype)
        steps.append(step)
        previous, previous_version = out, out_version
    return Chain(steps, outputs[-1][0].detach().clone())


class _NotAChain(Exception):  # control flow
    pass


def _covered(module: nn.Module) -> bool:
    if module.training and isinstance(module, (nn.BatchNorm2d, nn.Dropout)):
        return False
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    if isinstance(module, nn.MaxPool2d):
        return not module.return_indices
    if isinstance(module, nn.BatchNorm2d):  # a fixed per-channel scale only with running stats
        return module.running_var is not None
    return isinstance(module, (nn.ReLU, nn.LocalResponseNorm, *PASS_THROUGH))


def _record(module: nn.Module, inp: Tensor, policy: ReversePolicy) -> Tensor | None:
    """What the reverse of ``module`` needs, taken before an in-place op can change it."""
    if isinstance(module, nn.ReLU) and policy.rule in ("guided", "gradient"):
        return (inp > 0).to(inp.dtype)
    if isinstance(module, nn.LocalResponseNorm) and policy.lrn == "gradient":
        return _lrn_terms(module, inp.detach())
    if isinstance(module, nn.MaxPool2d):
        return pool_switches(module, inp)
    return None


def _recorded(saved: Tensor | None) -> Tensor:
    """What :func:`_record` saved for a ReLU/LRN/pool step whose reverse reads it (set by
    :func:`plan` for exactly those policies)."""
    return cast(Tensor, saved)


def reverse_batch(
    chain: Chain,
    image_index: Tensor,
    channels: Tensor,
    positions: Tensor,
    values: Tensor,
    policy: ReversePolicy,
    input_shape: torch.Size,
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
    out = chain.output
    signal = out.new_zeros((count, out.shape[1], 1, 1))
    signal[torch.arange(count), channels, 0, 0] = values.to(out.dtype)
    tops, lefts = positions[:, 0].clone(), positions[:, 1].clone()
    for step in reversed(chain.steps):
        signal, tops, lefts = _step_back(step, signal, tops, lefts, image_index, policy)
    return _paste(signal, tops, lefts, input_shape[2:])


def _step_back(
    step: _Step,
    signal: Tensor,
    tops: Tensor,
    lefts: Tensor,
    image_index: Tensor,
    policy: ReversePolicy,
) -> tuple[Tensor, Tensor, Tensor]:
    module = step.module
    if isinstance(module, nn.ReLU):
        if policy.rule == "zeiler":
            return torch.relu(signal), tops, lefts
        if policy.rule == "none":
            return signal, tops, lefts
        mask = _windows(_recorded(step.saved), image_index, tops, lefts, signal.shape[2:])
        rectified = torch.relu(signal) if policy.rule == "guided" else signal
        return rectified * mask, tops, lefts
    if isinstance(module, nn.LocalResponseNorm):
        if policy.lrn == "gradient":  # across channels only: exact on a window
            terms = _windows(_recorded(step.saved), image_index, tops, lefts, signal.shape[2:])
            return _lrn_gradient(module, signal, terms), tops, lefts
        return (signal if policy.lrn == "skip" else module(signal)), tops, lefts
    if isinstance(module, nn.BatchNorm2d):
        running_var = cast(Tensor, module.running_var)
        scale = 1 / torch.sqrt(running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        return signal * scale.view(1, -1, 1, 1), tops, lefts
    if isinstance(module, PASS_THROUGH):
        return signal, tops, lefts
    if isinstance(module, nn.Conv2d):
        grown = F.conv_transpose2d(
            signal, module.weight, None, module.stride, 0, 0, module.groups, module.dilation
        )
        padding = cast("tuple[int, ...]", module.padding)  # _covered() excludes str padding
        tops = tops * module.stride[0] - padding[0]
        lefts = lefts * module.stride[1] - padding[1]
        return _inside(grown, tops, lefts, step.in_hw), tops, lefts
    if isinstance(module, nn.MaxPool2d):
        return _unpool(step, signal, tops, lefts, image_index)
    raise AssertionError(f"uncovered module {module}")  # plan() admits only the above


def _lrn_terms(module: nn.LocalResponseNorm, x: Tensor) -> Tensor:
    """``[s^-β, x·s^-β-1, x]`` stacked on channels, with ``s = k + α·mean(x²)`` over each
    channel window exactly as ``F.local_response_norm`` pads it: the parts of the LRN
    gradient that do not depend on the signal, computed once on the full map."""
    size = module.size
    squares = F.pad((x * x).unsqueeze(1), (0, 0, 0, 0, size // 2, (size - 1) // 2))
    mean = F.avg_pool3d(squares, (size, 1, 1), stride=1).squeeze(1)
    base = mean * module.alpha + module.k
    return torch.cat([base.pow(-module.beta), x * base.pow(-module.beta - 1), x], dim=1)


def _lrn_gradient(module: nn.LocalResponseNorm, signal: Tensor, terms: Tensor) -> Tensor:
    """The LRN's vector-Jacobian product on windows, from :func:`_lrn_terms`.

    ``g_j = signal_j·s_j^-β − (2αβ/n)·x_j·Σ_c signal_c·x_c·s_c^-β-1`` over the channels ``c``
    whose window holds ``j`` (the transposed window: ``n-1-n//2`` before, ``n//2`` after).
    """
    size, channels = module.size, signal.shape[1]
    inverse, scaled, x = (terms[:, i * channels : (i + 1) * channels] for i in range(3))
    product = F.pad(signal * scaled, (0, 0, 0, 0, (size - 1) // 2, size // 2))
    spread = product[:, :channels].clone()
    for i in range(1, size):
        spread += product[:, i : i + channels]
    factor = 2 * module.alpha * module.beta / size
    return signal * inverse - factor * x * spread


def _unpool(
    step: _Step, signal: Tensor, tops: Tensor, lefts: Tensor, image_index: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    module = step.module
    kernel, stride, padding, dilation = (
        _pair(module.kernel_size),
        _pair(module.stride or module.kernel_size),
        _pair(module.padding),
        _pair(module.dilation),
    )
    size = signal.shape[2:]
    in_h = (size[0] - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1
    in_w = (size[1] - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1
    switches = _windows(_recorded(step.saved), image_index, tops, lefts, size, fill=-1)
    if step.keep is not None:
        signal = signal * _windows(step.keep, image_index, tops, lefts, size)
    new_tops = tops * stride[0] - padding[0]
    new_lefts = lefts * stride[1] - padding[1]
    width = step.in_hw[1]
    rows = switches.div(width, rounding_mode="floor") - new_tops.view(-1, 1, 1, 1)
    cols = switches.remainder(width) - new_lefts.view(-1, 1, 1, 1)
    valid = switches >= 0
    local = torch.where(valid, rows * in_w + cols, torch.zeros_like(switches))
    flat = signal.new_zeros((signal.shape[0], signal.shape[1], in_h * in_w))
    flat.scatter_add_(2, local.flatten(2), (signal * valid).flatten(2))
    return flat.view(signal.shape[0], signal.shape[1], in_h, in_w), new_tops, new_lefts


def _windows(
    source: Tensor, image_index: Tensor, tops: Tensor, lefts: Tensor, size: Any, fill: float = 0
) -> Tensor:
    """``source[b, :, top:top+h, left:left+w]`` per seed, ``fill`` outside the map."""
    height, width = int(size[0]), int(size[1])
    pad = (
        max(0, -int(lefts.min())),
        max(0, int(lefts.max()) + width - source.shape[3]),
        max(0, -int(tops.min())),
        max(0, int(tops.max()) + height - source.shape[2]),
    )
    padded = F.pad(source, pad, value=fill) if any(pad) else source
    rows0, cols0 = tops + pad[2], lefts + pad[0]
    parts = [
        padded[b, :, r : r + height, c : c + width]
        for b, r, c in zip(image_index.tolist(), rows0.tolist(), cols0.tolist(), strict=True)
    ]
    return torch.stack(parts)


def _inside(signal: Tensor, tops: Tensor, lefts: Tensor, hw: tuple[int, int]) -> Tensor:
    """Zero the window positions that fall in the layer's padding, outside the map."""
    rows = tops.view(-1, 1) + torch.arange(signal.shape[2], device=signal.device)
    cols = lefts.view(-1, 1) + torch.arange(signal.shape[3], device=signal.device)
    row_ok = (rows >= 0) & (rows < hw[0])
    col_ok = (cols >= 0) & (cols < hw[1])
    mask = (row_ok[:, :, None] & col_ok[:, None, :]).unsqueeze(1)
    return signal * mask


def _paste(windows: Tensor, tops: Tensor, lefts: Tensor, hw: Any) -> Tensor:
    height, width = int(hw[0]), int(hw[1])
    result = windows.new_zeros((windows.shape[0], windows.shape[1], height, width))
    for n, (top, left) in enumerate(zip(tops.tolist(), lefts.tolist(), strict=True)):
        r0, c0 = max(top, 0), max(left, 0)
        r1 = min(top + windows.shape[2], height)
        c1 = min(left + windows.shape[3], width)
        if r1 > r0 and c1 > c0:
            result[n, :, r0:r1, c0:c1] = windows[n, :, r0 - top : r1 - top, c0 - left : c1 - left]
    return result


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
