"""The rule table: each rule's rectification computed by hand on tiny tensors, the policy's
defaults, and every consumer reading the same table."""

from __future__ import annotations

import pytest
import torch

import deconvnet as dn
from deconvnet.engine.rules import (
    COMPARED_RULES,
    DEFAULT_RULE,
    GRADIENT_RULE,
    LRN_MODES,
    RULES,
    ReversePolicy,
)

SIGNAL = torch.tensor([2.0, -3.0, 5.0, -7.0])
MASK = torch.tensor([1.0, 1.0, 0.0, 0.0])  # the forward input was > 0 at the first two


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("zeiler", [2.0, 0.0, 5.0, 0.0]),  # relu(signal): the mask plays no part
        ("guided", [2.0, 0.0, 0.0, 0.0]),  # relu(signal) * mask
        ("gradient", [2.0, -3.0, 0.0, 0.0]),  # signal * mask
        ("none", [2.0, -3.0, 5.0, -7.0]),  # unrectified
    ],
)
def test_each_rule_rectifies_as_written(rule: str, expected: list[float]) -> None:
    assert torch.equal(RULES[rule].rectify(SIGNAL, MASK), torch.tensor(expected))


def test_a_masking_rule_without_the_mask_is_an_error() -> None:
    with pytest.raises(ValueError, match="mask"):
        RULES["guided"].rectify(SIGNAL)


def test_the_table_names_its_special_rules() -> None:
    assert DEFAULT_RULE == "zeiler" and GRADIENT_RULE == "gradient"
    assert COMPARED_RULES == ("zeiler", "guided", "gradient")  # "none" only reproduces a tool
    assert [name for name, rule in RULES.items() if rule.is_gradient] == ["gradient"]
    assert {rule.lrn for rule in RULES.values()} <= set(LRN_MODES)


def test_the_policy_fills_in_the_rules_own_defaults() -> None:
    assert ReversePolicy.of() == ReversePolicy("zeiler", "skip", "sum")
    assert ReversePolicy.of("gradient") == ReversePolicy("gradient", "gradient", "sum")
    assert ReversePolicy.of("guided", "reapply", "overwrite").overwrites
    assert dn.Deconvnet(torch.nn.ReLU(), rule="gradient").policy.lrn == "gradient"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rule": "deconv"}, "rule='deconv'"),
        ({"lrn": "x"}, "lrn="),
        ({"collisions": "max"}, "collisions="),
    ],
)
def test_unknown_names_are_refused_listing_the_table(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReversePolicy.of(**options)


def test_figures_compare_and_explorer_read_the_table() -> None:
    from deconvnet.faces.explorer.session import RULES as offered
    from deconvnet.instruments.compare import RULES as compared

    assert compared == offered == COMPARED_RULES
    assert [RULES[r].title for r in COMPARED_RULES] == [
        "deconvnet projection",
        "guided backprop",
        "gradient",
    ]
