"""``--rule``, ``--lrn``, ``--collisions``, ``--activations``, ``--precision``: the reverse
pass, with choices and defaults from the engine's rule table (:mod:`deconvnet.engine.rules`)
and precisions (:mod:`deconvnet.engine.precision`), shared by every command that projects."""

from __future__ import annotations

import argparse

from deconvnet.engine.precision import FACES_PRECISION, PRECISIONS
from deconvnet.engine.rules import (
    ACTIVATION_MODES,
    ANALOGUES,
    COLLISION_MODES,
    DEFAULT_ACTIVATIONS,
    DEFAULT_RULE,
    GRADIENT_RULE,
    LRN_MODES,
    RULES,
    ReversePolicy,
)


def add_rule_arguments(parser: argparse.ArgumentParser, *, lrn_and_collisions: bool = True) -> None:
    """``--rule``, ``--activations``, ``--precision`` and, unless told not to, ``--lrn`` and
    ``--collisions`` (each default ``None``: :func:`reverse_policy` fills in the rule's own)."""
    parser.add_argument(
        "--rule",
        choices=tuple(RULES),
        default=None,
        help=f"reverse rule (default: {DEFAULT_RULE}); "
        + "; ".join(rule.description for rule in RULES.values()),
    )
    add_activations_argument(parser)
    add_precision_argument(parser)
    if not lrn_and_collisions:
        return
    exact = RULES[GRADIENT_RULE]
    parser.add_argument(
        "--lrn",
        choices=tuple(LRN_MODES),
        default=None,
        help=f"LRN on the way down (default: {exact.lrn} with --rule {exact.name}, so that it "
        f"is the plain gradient; {RULES[DEFAULT_RULE].lrn} otherwise)",
    )
    parser.add_argument(
        "--collisions",
        choices=COLLISION_MODES,
        default=None,
        help=f"overlapping unpooling (default: {COLLISION_MODES[0]})",
    )


def add_activations_argument(parser: argparse.ArgumentParser) -> None:
    """``--activations strict|relu-like``: what zeiler and guided do at SiLU, GELU, gates and
    LayerNorm (the compare and serve commands take it without ``--rule``)."""
    parser.add_argument(
        "--activations",
        choices=tuple(ACTIVATION_MODES),
        default=None,
        help=f"layers the paper never met, under zeiler and guided (default: "
        f"{DEFAULT_ACTIVATIONS}); "
        + "; ".join(f"{mode.name}: {mode.description}" for mode in ACTIVATION_MODES.values())
        + f" (SiLU, GELU, Hardswish, sigmoid gates, LayerNorm …: use {ANALOGUES} for "
        "EfficientNet, MobileNetV3, RegNetY, ConvNeXt)",
    )


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision`` (default ``None``: :func:`faces_precision` fills in the faces' own)."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help=f"number type of the reverse pass (default: {FACES_PRECISION}: bfloat16 where "
        "the device computes it natively, else float32); the forward pass stays the model's; "
        "a projection whose rounding would show in its 8-bit picture is redone in float32 "
        "and the manifest says so",
    )


def faces_precision(args: argparse.Namespace) -> str:
    """The precision asked for, or the faces' default: pictures at the device's speed."""
    return getattr(args, "precision", None) or FACES_PRECISION


def reverse_policy(args: argparse.Namespace) -> ReversePolicy:
    """The reverse pass the options ask for, each default resolved (for the manifest)."""
    return ReversePolicy.of(
        getattr(args, "rule", None),
        getattr(args, "lrn", None),
        getattr(args, "collisions", None),
        activations=getattr(args, "activations", None),
        precision=faces_precision(args),
    )
