"""Rule comparison: each rule's projection against autograd or the engine run alone."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deconvnet.compare import RULES, compare_rules, comparison_figure
from deconvnet.engine import Deconvnet
from deconvnet.selection import Neuron, TopMaps


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 5, 3, padding=1),
        nn.ReLU(),
    ).eval()


def test_gradient_column_is_the_autograd_gradient_times_the_seed():
    model = _net()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = model[:4](x)
    value = y[0, 2, 3, 4]
    (grad,) = torch.autograd.grad(value, x)
    result = compare_rules(model, x.detach(), "3", Neuron(2, 3, 4))
    assert result.rules == RULES
    gradient = result.images[RULES.index("gradient"), 0]
    torch.testing.assert_close(gradient, value.detach() * grad[0], rtol=1e-5, atol=1e-6)


def test_each_rule_equals_the_engine_alone_and_figure_has_two_rows_per_seed():
    model = _net()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    result = compare_rules(model, x, "3", TopMaps(2))
    for r, rule in enumerate(RULES):
        with Deconvnet(model, rule=rule) as net:
            alone = net.project(x, "3", TopMaps(2)).images[0]
        torch.testing.assert_close(result.images[r], alone)
    assert result.channels.shape == (2,)
    rgb = np.full((12, 12, 3), 128, np.uint8)
    sheet = comparison_figure(result, rgb)
    single = comparison_figure(compare_rules(model, x, "3", TopMaps(1)), rgb)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == single.shape[1]
    assert sheet.shape[0] > 1.8 * single.shape[0]
