"""float16/bfloat16 models on CPU: LRN is computed in float32 where CPU has no kernel; any
other missing kernel is a clear error naming the op.

Oracle: the same (rounded) weights and input in float64, same fixed seed unit.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import deconvnet as dn
from tests import _nets

TOLERANCE = {torch.float16: 5e-2, torch.bfloat16: 2.5e-1}
"""Relative L2 error. float16 keeps 11 significant bits, bfloat16 8; every layer of the
forward and reverse pass rounds once, and rounding flips a few ReLU masks and pooling
choices near ties (measured worst: 1.1e-2 float16, 0.149 bfloat16, both the CaffeNet-shaped
net with the gradient rule; a wrong LRN rule shows as 0.41)."""

CASES = [
    ("lrn", _nets.lrn_net, "4", (1, 3, 20, 20), dn.Neuron(2, 3, 4)),
    ("caffenet", lambda: _nets.caffenet(8), "12", (1, 3, 131, 131), dn.Neuron(5, 3, 3)),
    ("resnet", lambda: _nets.torchvision_resnet().eval(), "layer2.0.conv2", (1, 3, 32, 32),
     dn.Neuron(3, 2, 2)),
]  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rule", ["zeiler", "gradient"])
@pytest.mark.parametrize(("name", "build", "layer", "shape", "select"), CASES)
def test_low_precision_models_run_on_cpu(dtype, rule, name, build, layer, shape, select) -> None:
    model = build().to(dtype)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    result = dn.Deconvnet(model, rule=rule).project(x, layer, select)
    assert result.images.dtype == dtype
    reference = build().to(dtype).double()  # the rounded weights, computed exactly
    expected = dn.Deconvnet(reference, rule=rule).project(x.double(), layer, select).images
    error = (result.images.double() - expected).norm() / expected.norm()
    assert error <= TOLERANCE[dtype], (name, float(error))


class _Pool3d(nn.Module):
    """A forward that calls an op CPU has no float16 kernel for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(x.unsqueeze(1), (3, 1, 1), stride=1).squeeze(1)


def test_missing_kernel_is_named() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _Pool3d()).half()
    x = torch.randn(1, 3, 8, 8).half()
    with pytest.raises(
        dn.InputError,
        match=r"op avg_pool3d_out_frame has no torch.float16 "
        r"kernel on cpu: run the model in float32 with model.float\(\)",
    ):
        dn.Deconvnet(model).project(x, "1", dn.TopMaps(1))
