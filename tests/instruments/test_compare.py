"""Rule comparison: each rule's projection against autograd or the engine run alone."""

from __future__ import annotations

import torch

from deconvnet.engine.engine import Deconvnet
from deconvnet.engine.selection import Neuron, TopMaps
from deconvnet.instruments.compare import RULES, compare_rules
from tests import _nets


def test_gradient_column_is_the_autograd_gradient_times_the_seed():
    model = _nets.small_conv()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = model[:4](x)
    value = y[0, 2, 3, 4]
    (grad,) = torch.autograd.grad(value, x)
    result = compare_rules(model, x.detach(), "3", Neuron(2, 3, 4))
    assert result.rules == RULES
    gradient = result.images[RULES.index("gradient"), 0]
    torch.testing.assert_close(gradient, value.detach() * grad[0], rtol=1e-5, atol=1e-6)


def test_each_rule_equals_the_engine_alone():
    model = _nets.small_conv()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    result = compare_rules(model, x, "3", TopMaps(2))
    for r, rule in enumerate(RULES):
        with Deconvnet(model, rule=rule) as net:
            alone = net.project(x, "3", TopMaps(2)).images[0]
        torch.testing.assert_close(result.images[r], alone)
    assert result.channels.shape == (2,)
