"""An independent oracle of the reverse rules: custom autograd Functions patched over torch's
functionals, then plain ``torch.autograd.grad``.

Nothing here imports the engine. Each rule is written out from the README's "Semantics, and
why": at a rectifier ``f`` (ReLU, SiLU, GELU …) zeiler passes ``relu(g)``, guided
``relu(g)·max(f'(x), 0)`` and the gradient ``g·f'(x)``, with ``f'`` in closed form here; the
leaky rectifiers get the leaky analogue; a gate (sigmoid, hard-sigmoid, softmax) is a
constant (its output detached); a per-sample normalisation is written with its statistics
detached; ``collisions="overwrite"`` unpools in raster order with a Python loop. Everything
else is autograd's own transpose.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ORIGINAL = {name: getattr(F, name) for name in dir(F) if not name.startswith("__")}
ORIGINAL_TORCH = {"sigmoid": torch.sigmoid, "softmax": torch.softmax}
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


# -- closed-form derivatives -----------------------------------------------------------------


def sigmoid_(x: Tensor) -> Tensor:
    return 1 / (1 + torch.exp(-x))


def d_silu(x: Tensor, beta: float = 1.0) -> Tensor:
    """d/dx x·σ(βx)."""
    s = sigmoid_(beta * x)
    return s * (1 + beta * x * (1 - s))


def d_gelu(x: Tensor, approximate: str = "none") -> Tensor:
    if approximate == "tanh":
        c = math.sqrt(2 / math.pi)
        t = torch.tanh(c * (x + 0.044715 * x**3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * 0.044715 * x**2)
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    pdf = torch.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)
    return cdf + x * pdf


def d_mish(x: Tensor) -> Tensor:
    t = torch.tanh(torch.log1p(torch.exp(x)))
    return t + x * (1 - t**2) * sigmoid_(x)


def d_hardswish(x: Tensor, beta: float = 1.0) -> Tensor:
    """d/dx x·hardsigmoid(βx) = hardswish'(βx)."""
    z = beta * x
    return torch.where(z < -3, 0.0, torch.where(z > 3, 1.0, (2 * z + 3) / 6))


def d_elu(x: Tensor, alpha: float = 1.0, scale: float = 1.0, input_scale: float = 1.0) -> Tensor:
    return torch.where(x > 0, scale, scale * alpha * input_scale * torch.exp(x * input_scale))


def d_celu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """CELU's derivative as autograd computes it: ``exp(x/α)`` with ``1/α`` rounded to float32
    (PyTorch's derivatives.yaml: ``1.0/alpha.toFloat()``)."""
    rounded = float(torch.tensor(alpha, dtype=torch.float32))
    return d_elu(x, alpha, 1.0, 1 / rounded)


def d_softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    return torch.where(beta * x > threshold, 1.0, sigmoid_(beta * x))


# -- the rules as autograd Functions ---------------------------------------------------------


class Rectified(torch.autograd.Function):
    """Forward value ``value``; backward by ``rule`` with local derivative ``d``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, value: Tensor, d: Tensor, rule: str) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(d)
        ctx.rule = rule
        return value.clone()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Any:  # type: ignore[override]
        (d,) = ctx.saved_tensors
        if ctx.rule == "zeiler":
            out = torch.relu(g)
        elif ctx.rule == "guided":
            out = torch.relu(g) * d.clamp(min=0)
        else:
            out = g * d
        return out, None, None, None


class Leaky(torch.autograd.Function):
    """The leaky analogue: zeiler passes ``leaky(g)``, guided ``relu(g·f'(x))``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, slope: float, rule: str) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.slope, ctx.rule = slope, rule
        return torch.where(x > 0, x, slope * x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Any:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        local = torch.where(x > 0, torch.ones_like(x), torch.full_like(x, ctx.slope))
        if ctx.rule == "zeiler":
            out = torch.where(g > 0, g, ctx.slope * g)
        else:
            out = torch.relu(g * local)
        return out, None, None


class OverwritePool(torch.autograd.Function):
    """Max pooling whose backward writes each pooled value at its switch in raster order,
    a later window overwriting an earlier one (the old Caffe InvPooling layer)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, options: dict[str, Any]) -> Tensor:  # type: ignore[override]
        out, index = ORIGINAL["max_pool2d_with_indices"](x, **options)
        ctx.save_for_backward(index)
        ctx.shape = x.shape
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Any:  # type: ignore[override]
        (index,) = ctx.saved_tensors
        batch, channels, height, width = ctx.shape
        grad = torch.zeros(batch, channels, height * width, dtype=g.dtype)
        flat_g, flat_i = g.flatten(2), index.flatten(2)
        for b in range(batch):
            for c in range(channels):
                for j in range(flat_i.shape[2]):
                    grad[b, c, int(flat_i[b, c, j])] = flat_g[b, c, j]
        return grad.view(ctx.shape), None


def rectifier(x: Tensor, value: Tensor, d: Tensor, rule: str) -> Tensor:
    result: Tensor = Rectified.apply(x, value, d, rule)  # type: ignore[no-untyped-call]
    return result


def _frozen(x: Tensor, dims: tuple[int, ...], eps: float, centred: bool = True) -> Tensor:
    """``(x − μ)/σ`` (``x/rms`` unless ``centred``) with μ and σ detached."""
    if centred:
        mean = x.mean(dim=dims, keepdim=True).detach()
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True).detach()
        return (x - mean) / torch.sqrt(var + eps)
    return x / torch.sqrt((x.detach() ** 2).mean(dim=dims, keepdim=True) + eps)


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None, channel_axis: bool) -> Tensor:
    shape = (1, -1, *([1] * (y.dim() - 2))) if channel_axis else (-1,)
    if weight is not None:
        y = y * (weight.view(shape) if channel_axis else weight)
    if bias is not None:
        y = y + (bias.view(shape) if channel_axis else bias)
    return y


def _patches(rule: str, collisions: str) -> dict[tuple[Any, str], Callable[..., Any]]:
    """What replaces each functional under ``rule`` (the gradient rule patches nothing but
    the overwriting pool)."""
    patches: dict[tuple[Any, str], Callable[..., Any]] = {}
    if collisions == "overwrite":

        def max_pool2d(
            x: Tensor, kernel_size: Any, stride: Any = None, *args: Any, **kwargs: Any
        ) -> Any:
            names = ("padding", "dilation", "ceil_mode")
            options = {"kernel_size": kernel_size, "stride": stride or kernel_size}
            options.update(zip(names, args, strict=False))
            options.update((k, v) for k, v in kwargs.items() if k in names)
            return OverwritePool.apply(x, options)  # type: ignore[no-untyped-call]

        patches[(F, "max_pool2d")] = max_pool2d
    if rule == "gradient":
        return patches

    def smooth(name: str, derivative: Callable[..., Tensor]) -> Callable[..., Tensor]:
        def patched(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            kwargs.pop("inplace", None)
            args = tuple(a for a in args if not isinstance(a, bool))  # positional inplace
            value = ORIGINAL[name](x, *args, **kwargs)
            return rectifier(x, value, derivative(x.detach(), *args, **kwargs), rule)

        return patched

    patches.update(
        {
            (F, "relu"): smooth("relu", lambda x: (x > 0).to(x.dtype)),
            (F, "silu"): smooth("silu", d_silu),
            (F, "gelu"): smooth("gelu", d_gelu),
            (F, "mish"): smooth("mish", d_mish),
            (F, "hardswish"): smooth("hardswish", d_hardswish),
            (F, "softplus"): smooth("softplus", d_softplus),
            (F, "elu"): smooth("elu", lambda x, alpha=1.0: d_elu(x, alpha)),
            (F, "celu"): smooth("celu", d_celu),
            (F, "selu"): smooth("selu", lambda x: d_elu(x, SELU_ALPHA, SELU_SCALE)),
            (F, "hardtanh"): smooth(
                "hardtanh", lambda x, low=-1.0, high=1.0: ((x > low) & (x < high)).to(x.dtype)
            ),
        }
    )
    patches[(F, "leaky_relu")] = lambda x, negative_slope=0.01, inplace=False: Leaky.apply(
        x, negative_slope, rule
    )
    patches[(F, "rrelu")] = lambda x, lower=1 / 8, upper=1 / 3, training=False, inplace=False: (
        Leaky.apply(x, (lower + upper) / 2, rule)
    )
    # gates: constant factors
    patches[(torch, "sigmoid")] = lambda x: ORIGINAL_TORCH["sigmoid"](x).detach()
    patches[(Tensor, "sigmoid")] = lambda x: ORIGINAL_TORCH["sigmoid"](x).detach()
    patches[(Tensor, "sigmoid_")] = lambda x: ORIGINAL_TORCH["sigmoid"](x).detach()
    patches[(F, "hardsigmoid")] = lambda x, inplace=False: ORIGINAL["hardsigmoid"](x).detach()
    patches[(F, "softmax")] = lambda x, *a, **k: ORIGINAL["softmax"](x, *a, **k).detach()
    patches[(torch, "softmax")] = lambda x, *a, **k: ORIGINAL_TORCH["softmax"](x, *a, **k).detach()

    # per-sample normalisations: statistics frozen
    def layer_norm(
        x: Tensor, shape: Any, weight: Any = None, bias: Any = None, eps: Any = 1e-5
    ) -> Tensor:
        dims = tuple(range(x.dim() - len(shape), x.dim()))
        return _affine(_frozen(x, dims, eps), weight, bias, channel_axis=False)

    def rms_norm(x: Tensor, shape: Any, weight: Any = None, eps: Any = None) -> Tensor:
        dims = tuple(range(x.dim() - len(shape), x.dim()))
        eps = torch.finfo(x.dtype).eps if eps is None else eps
        return _affine(_frozen(x, dims, eps, centred=False), weight, None, channel_axis=False)

    def group_norm(
        x: Tensor, groups: int, weight: Any = None, bias: Any = None, eps: Any = 1e-5
    ) -> Tensor:
        grouped = _frozen(x.reshape(x.shape[0], groups, -1), (2,), eps).reshape(x.shape)
        return _affine(grouped, weight, bias, channel_axis=True)

    def instance_norm(x: Tensor, running_mean: Any = None, running_var: Any = None,
                      weight: Any = None, bias: Any = None, use_input_stats: bool = True,
                      momentum: float = 0.1, eps: float = 1e-5) -> Tensor:  # fmt: skip
        assert use_input_stats
        return _affine(_frozen(x, tuple(range(2, x.dim())), eps), weight, bias, channel_axis=True)

    def batch_norm(x: Tensor, running_mean: Any, running_var: Any, weight: Any = None,
                   bias: Any = None, training: bool = False, momentum: float = 0.1,
                   eps: float = 1e-5) -> Tensor:  # fmt: skip
        if not training and running_var is not None:
            original = ORIGINAL["batch_norm"]
            return original(x, running_mean, running_var, weight, bias, False, momentum, eps)
        dims = tuple(d for d in range(x.dim()) if d != 1)
        return _affine(_frozen(x, dims, eps), weight, bias, channel_axis=True)

    patches.update(
        {
            (F, "batch_norm"): batch_norm,
            (F, "layer_norm"): layer_norm,
            (F, "rms_norm"): rms_norm,
            (F, "group_norm"): group_norm,
            (F, "instance_norm"): instance_norm,
        }
    )
    return patches


@contextlib.contextmanager
def patched(rule: str, collisions: str = "sum") -> Iterator[None]:
    """The functionals replaced by the oracle's rules, restored on the way out."""
    patches = _patches(rule, collisions)
    saved = {key: getattr(*key) for key in patches}
    try:
        for (namespace, name), function in patches.items():
            setattr(namespace, name, function)
        yield
    finally:
        for (namespace, name), function in saved.items():
            setattr(namespace, name, function)


class _Reached(Exception):
    pass


def project(
    model: nn.Module,
    x: Tensor,
    layer: str,
    channels: Tensor,
    positions: Tensor | None,
    rule: str,
    collisions: str = "sum",
) -> tuple[Tensor, Tensor]:
    """The oracle's projection of one unit per image (``channels[b]``, at
    ``positions[b]`` = (y, x), None for a flat layer), seeded with its activation; and those
    activations. ``(B, C, H, W)``, ``(B,)``."""
    x = x.detach().clone().requires_grad_(True)
    found: dict[str, Tensor] = {}

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
        found["y"] = output
        raise _Reached

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        with patched(rule, collisions), contextlib.suppress(_Reached):
            model(x.clone())
    finally:
        handle.remove()
    y = found["y"]
    seed = torch.zeros_like(y)
    values = []
    for b in range(y.shape[0]):
        index = (b, int(channels[b])) + (
            () if positions is None else tuple(int(p) for p in positions[b])
        )
        seed[index] = y[index].detach()
        values.append(y[index].detach())
    (image,) = torch.autograd.grad(y, x, seed)
    return image, torch.stack(values)


def assert_matches(
    result: Any,
    model: nn.Module,
    x: Tensor,
    layer: str,
    rule: str,
    collisions: str = "sum",
    tol: float = 1e-10,
) -> None:
    """Every selection of the engine's ``result`` equals the oracle's projection of the same
    unit within ``tol`` of its largest value, seeded with the same activation. An all-zero
    oracle projection (a seed that ``overwrite`` erases) must be all zero too."""
    for k in range(result.images.shape[1]):
        expected, values = project(
            model, x, layer, result.channels[:, k], result.positions[:, k], rule, collisions
        )
        assert torch.allclose(result.values[:, k], values, rtol=1e-9, atol=0)
        scale = float(expected.abs().max())
        got = result.images[:, k]
        if scale == 0:
            assert float(got.abs().max()) == 0, (layer, rule, collisions, k)
            continue
        error = float((got - expected).abs().max()) / scale
        assert error <= tol, (layer, rule, collisions, k, error)
