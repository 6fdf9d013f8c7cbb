"""The new op families, spelling by spelling: every spelling of a family projects exactly as
its module does (module, functional, method, in-place, ATen, by hand), under every rule;
the ReLUs that used to pass as their gradient (``x.clamp(min=0)``, ``torch.maximum``,
``torch.where``, ``clamp(0, 6)``) now follow the rectifier rules; what has no rule is
refused when the signal reaches it, under either activation policy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import deconvnet as dn
from deconvnet.engine import ops
from tests import _oracle
from tests._nets import _init

A = torch.ops.aten
RULES = ("zeiler", "guided", "gradient")
TOL = 1e-12


class Act(nn.Module):
    """An activation written as a function of the signal."""

    def __init__(self, function: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x)


def _net(activation: nn.Module, seed: int = 5) -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), activation, nn.Conv2d(6, 6, 3, padding=1))
    return _init(model, seed).double().eval()  # type: ignore[return-value]


def _x(seed: int = 0) -> Tensor:
    return 2 * torch.randn(
        2, 3, 10, 10, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def _project(model: nn.Module, rule: str, activations: str = "relu-like") -> dn.Projection:
    with dn.Deconvnet(model, rule, activations=activations) as net:
        return net.project(_x(), layer="2", select=dn.TopMaps(2))


def _same(a: dn.Projection, b: dn.Projection) -> bool:
    scale = float(b.images.abs().max())
    return (
        torch.equal(a.channels, b.channels)
        and float((a.images - b.images).abs().max()) <= TOL * scale
    )


SPELLINGS: dict[str, tuple[nn.Module, list[Callable[[Tensor], Tensor]]]] = {
    "silu": (nn.SiLU(), [
        F.silu, lambda x: F.silu(x.clone(), inplace=True), torch._C._nn.silu,
        lambda x: torch._C._nn.silu_(x.clone()), A.silu.default,
        lambda x: A.silu_.default(x.clone()),
    ]),
    "gelu": (nn.GELU(), [
        F.gelu, torch._C._nn.gelu, A.gelu.default, lambda x: A.gelu_.default(x.clone()),
    ]),
    "gelu_tanh": (nn.GELU("tanh"), [
        lambda x: F.gelu(x, approximate="tanh"), lambda x: A.gelu.default(x, approximate="tanh"),
    ]),
    "mish": (nn.Mish(), [
        F.mish, lambda x: F.mish(x.clone(), inplace=True), A.mish.default,
        lambda x: A.mish_.default(x.clone()),
    ]),
    "hardswish": (nn.Hardswish(), [
        F.hardswish, lambda x: F.hardswish(x.clone(), True), A.hardswish.default,
        lambda x: A.hardswish_.default(x.clone()),
    ]),
    "elu": (nn.ELU(0.7), [
        lambda x: F.elu(x, 0.7), lambda x: F.elu(x.clone(), 0.7, True),
        lambda x: F.elu_(x.clone(), 0.7), lambda x: torch._C._nn.elu(x, 0.7),
        lambda x: A.elu.default(x, 0.7),
    ]),
    "celu": (nn.CELU(0.7), [
        lambda x: F.celu(x, 0.7), lambda x: torch.celu(x, 0.7),
        lambda x: torch.celu_(x.clone(), 0.7), lambda x: A.celu.default(x, 0.7),
    ]),
    "selu": (nn.SELU(), [
        F.selu, torch.selu, lambda x: torch.selu_(x.clone()), lambda x: F.selu(x.clone(), True),
        A.selu.default,
    ]),
    "softplus": (nn.Softplus(2.0, 10.0), [
        lambda x: F.softplus(x, 2.0, 10.0), lambda x: A.softplus.default(x, 2.0, 10.0),
    ]),
    "relu": (nn.ReLU(), [
        lambda x: x.clamp(min=0), lambda x: torch.clamp(x, min=0), lambda x: torch.clamp_min(x, 0),
        lambda x: x.clamp_min(0.0), lambda x: x.clone().clamp_(min=0),
        lambda x: torch.clip(x, 0), lambda x: torch.maximum(x, torch.zeros(())),
        lambda x: torch.max(torch.zeros_like(x), x), lambda x: torch.where(x > 0, x, 0.0),
        lambda x: torch.where(x >= 0, x, torch.zeros(())), lambda x: torch.where(x < 0, 0.0, x),
        lambda x: x.where(x > 0, 0.0), lambda x: A.clamp_min.default(x, 0),
        lambda x: A.clamp.default(x, 0),
    ]),
    "relu6": (nn.ReLU6(), [
        lambda x: x.clamp(0, 6), lambda x: torch.clamp(x, min=0.0, max=6.0),
        lambda x: torch.clip(x, 0, 6), lambda x: F.hardtanh(x, 0.0, 6.0), F.relu6,
        lambda x: A.clamp.default(x, 0, 6),
    ]),
    "rrelu": (nn.LeakyReLU(0.2), [
        lambda x: F.rrelu(x, 0.1, 0.3), lambda x: torch.rrelu(x, 0.1, 0.3),
        lambda x: F.rrelu_(x.clone(), 0.1, 0.3), nn.RReLU(0.1, 0.3).eval(),
    ]),
}  # fmt: skip
"""Each family: its module, and every other spelling of the same function."""

BY_HAND: dict[str, tuple[nn.Module, list[Callable[[Tensor], Tensor]]]] = {
    "silu": (nn.SiLU(), [
        lambda x: x * torch.sigmoid(x), lambda x: x * x.sigmoid(), lambda x: x.mul(F.sigmoid(x)),
        lambda x: torch.sigmoid(x) * x, lambda x: x * A.sigmoid.default(x),
        lambda x: x * torch.special.expit(x), lambda x: x.mul_(x.sigmoid()),
    ]),
    "hardswish": (nn.Hardswish(), [lambda x: x * F.hardsigmoid(x), lambda x: F.hardsigmoid(x) * x]),
}  # fmt: skip
"""Activations written by hand as ``x * gate(x)``: under the rectifying rules they are their
family (under the gradient rule they are the user's own expression, differentiated by
autograd: its hard-sigmoid derivative uses a float32 1/6)."""


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("family", sorted(SPELLINGS))
def test_every_spelling_projects_as_the_module(family: str, rule: str) -> None:
    module, spellings = SPELLINGS[family]
    expected = _project(_net(module), rule)
    assert expected.images.abs().max() > 0
    for index, spelling in enumerate(spellings):
        got = _project(
            _net(Act(spelling) if not isinstance(spelling, nn.Module) else spelling), rule
        )
        assert _same(got, expected), (family, index)


@pytest.mark.parametrize("rule", ["zeiler", "guided"])
@pytest.mark.parametrize("family", sorted(BY_HAND))
def test_a_gate_of_the_tensor_it_multiplies_is_its_activation(family: str, rule: str) -> None:
    module, spellings = BY_HAND[family]
    expected = _project(_net(module), rule)
    for index, spelling in enumerate(spellings):
        assert _same(_project(_net(Act(spelling)), rule), expected), (family, index)
    with pytest.raises(dn.UnsupportedLayerError, match="sigmoid"):
        _project(_net(Act(spellings[0])), rule, "strict")


@pytest.mark.parametrize("rule", ["zeiler", "guided"])
@pytest.mark.parametrize(
    "spelling",
    [
        lambda x: x.clamp(min=0), lambda x: torch.clamp_min(x, 0),
        lambda x: torch.maximum(x, torch.zeros(())), lambda x: torch.where(x > 0, x, 0.0),
        lambda x: x.clamp(0, 6),
    ],
)  # fmt: skip
def test_relus_by_other_names_are_rectified_under_either_policy(spelling, rule: str) -> None:
    """They used to pass as their gradient (1.2 relative from the nn.ReLU twin)."""
    relu = nn.ReLU6() if spelling(torch.tensor([7.0])).item() == 6 else nn.ReLU()
    for activations in ("strict", "relu-like"):
        assert _same(_project(_net(Act(spelling)), rule, activations), _project(_net(relu), rule))


def test_quick_gelu_by_hand_is_a_rectifier_with_its_own_derivative() -> None:
    """``x * torch.sigmoid(1.702 * x)`` against the oracle's closed form."""
    for rule in RULES:
        model = _net(Act(lambda x: x * torch.sigmoid(1.702 * x)))
        got = _project(model, rule)

        def quick(x: Tensor, rule: str = rule) -> Tensor:
            value = x * _oracle.ORIGINAL_TORCH["sigmoid"](1.702 * x)
            return _oracle.rectifier(x, value, _oracle.d_silu(x.detach(), 1.702), rule)

        oracle_model = _net(Act(quick))
        for k in range(2):
            expected, _ = _oracle.project(
                oracle_model, _x(), "2", got.channels[:, k], got.positions[:, k], rule
            )
            scale = float(expected.abs().max())
            assert float((got.images[:, k] - expected).abs().max()) <= 1e-10 * scale


@pytest.mark.parametrize("activations", ["strict", "relu-like"])
@pytest.mark.parametrize(
    ("name", "spelling"),
    [
        ("hardshrink", nn.Hardshrink()), ("softshrink", nn.Softshrink()),
        ("softmin", nn.Softmin(dim=1)), ("erf", Act(torch.erf)), ("tanh", nn.Tanh()),
        ("sigmoid", nn.Sigmoid()), ("hardsigmoid", nn.Hardsigmoid()),
        ("softmax", nn.Softmax(dim=1)),
        ("clamp", Act(lambda x: x.clamp(-1, 1))), ("log_sigmoid", nn.LogSigmoid()),
    ],
)  # fmt: skip
def test_what_has_no_rule_is_refused_on_the_main_path(name, spelling, activations) -> None:
    """Hardshrink, Softshrink, Softmin and erf used to pass as their gradient; a sigmoid or
    softmax that multiplies nothing is no gate."""
    model = _net(spelling)
    for rule in ("zeiler", "guided"):
        with pytest.raises(dn.UnsupportedLayerError, match=rf"{name}.* in module 1 "):
            _project(model, rule, activations)
    assert _project(model, "gradient", activations).images.abs().max() > 0


@pytest.mark.parametrize(
    "norm",
    [nn.LayerNorm([6, 10, 10]), nn.GroupNorm(2, 6), nn.InstanceNorm2d(6, affine=True),
     nn.RMSNorm([6, 10, 10]), nn.BatchNorm2d(6, track_running_stats=False)],
)  # fmt: skip
def test_per_sample_normalisations_are_refused_under_strict_and_frozen_under_relu_like(norm):
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), norm, nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1)
    )
    model = _init(model, 3).double().eval()
    for rule in ("zeiler", "guided"):
        with pytest.raises(dn.UnsupportedLayerError, match=r"module 1 .*--activations relu-like"):
            _project(model, rule, "strict")
        got = _project(model, rule)
        for k in range(2):
            expected, _ = _oracle.project(
                model, _x(), "2", got.channels[:, k], got.positions[:, k], rule
            )
            assert float((got.images[:, k] - expected).abs().max()) <= 1e-10 * float(
                expected.abs().max()
            )


def test_a_weight_standardised_convolution_is_no_normalisation_of_the_signal() -> None:
    """NFNet's ScaledStdConv2d standardises its weight with ``F.batch_norm(training=True)``:
    that never meets the signal, so strict does not refuse it, and it projects as the plain
    convolution with the standardised weight."""

    class StdConv(nn.Conv2d):
        def forward(self, x: Tensor) -> Tensor:
            weight = F.batch_norm(
                self.weight.reshape(1, self.out_channels, -1), None, None, training=True, eps=1e-6
            ).reshape_as(self.weight)
            return F.conv2d(x, weight, self.bias, self.stride, self.padding)

    model = _init(nn.Sequential(StdConv(3, 6, 3, padding=1), nn.ReLU(), StdConv(6, 6, 3)), 2)
    model = model.double().eval()
    plain = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3)).double()
    with torch.no_grad():
        for std, conv in ((model[0], plain[0]), (model[2], plain[2])):
            flat = std.weight.reshape(std.out_channels, -1)
            mean, var = flat.mean(1, keepdim=True), flat.var(1, unbiased=False, keepdim=True)
            conv.weight.copy_(((flat - mean) / torch.sqrt(var + 1e-6)).reshape_as(std.weight))
            conv.bias.copy_(std.bias)
    for rule in RULES:
        assert _same(_project(model, rule, "strict"), _project(plain.eval(), rule, "strict"))


class HardMishAutoFn(torch.autograd.Function):
    """timm's memory-efficient hard mish: an old-style Function (no setup_context)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(x)
        return 0.5 * x * (x + 2).clamp(min=0, max=2)

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[no-untyped-def, override]
        (x,) = ctx.saved_tensors
        m = torch.ones_like(x) * (x >= -2.0)
        m = torch.where((x >= -2.0) & (x <= 0.0), x + 1.0, m)
        return grad_output * m


def test_an_old_style_autograd_function_runs_under_gradient_and_is_refused_by_name() -> None:
    """It used to fail under every rule with an InputError blaming the input."""
    model = _net(Act(HardMishAutoFn.apply))
    got = _project(model, "gradient", "strict")
    primal = _x().requires_grad_(True)
    y = model(primal)
    for k in range(2):
        seed = torch.zeros_like(y)
        for b in range(2):
            c, (row, col) = int(got.channels[b, k]), (int(p) for p in got.positions[b, k])
            seed[b, c, row, col] = y[b, c, row, col].detach()
        (expected,) = torch.autograd.grad(y, primal, seed, retain_graph=True)
        assert float((got.images[:, k] - expected).abs().max()) <= 1e-10 * float(
            expected.abs().max()
        )
    for rule in ("zeiler", "guided"):
        for activations in ("strict", "relu-like"):
            with pytest.raises(dn.UnsupportedLayerError, match="HardMishAutoFn"):
                _project(model, rule, activations)


def test_cross_map_lrn_module_runs_under_every_rule() -> None:
    """``nn.CrossMapLRN2d`` is an old-style Function too; its rule replaces it."""
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.CrossMapLRN2d(3), nn.Conv2d(6, 6, 3))
    model = _init(model, 1).eval()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    for rule in RULES:
        with dn.Deconvnet(model, rule) as net:
            assert net.project(x, layer="3", select=dn.MapMax(0)).images.abs().max() > 0


def test_rrelu_in_train_mode_is_refused() -> None:
    model = _net(nn.RReLU(0.1, 0.3)).train()
    with pytest.raises(dn.UnsupportedLayerError, match=r"rrelu.*train mode"):
        _project(model, "zeiler")


def test_the_new_families_are_entries_of_the_table() -> None:
    from deconvnet.engine.ops import gates, normalisation, rectifiers, smooth

    for spelling, family in [
        (F.silu, smooth.SiLU), (A.gelu.default, smooth.GELU), (torch.selu_, smooth.ELU),
        (torch.Tensor.clamp_min_, rectifiers.Clamp), (torch.where, rectifiers.Where),
        (torch.rrelu, rectifiers.RReLU), (torch.Tensor.sigmoid, gates.Gate),
        (A._softmax.default, gates.Gate), (torch.Tensor.__rmul__, gates.Product),
        (F.layer_norm, normalisation.LayerNorm), (F.rms_norm, normalisation.RMSNorm),
        (torch.erf, rectifiers.Undefined), (F.softshrink, rectifiers.Undefined),
    ]:  # fmt: skip
        assert isinstance(ops.OPS[spelling], family), spelling
