"""Recognize activations that exporters write out elementwise: GELU (erf and tanh forms), HardSwish, SiLU."""

from __future__ import annotations

import itertools
import math

from ember.ir.graph import Graph
from ember.passes.manager import register
from ember.passes.pattern import P, Pattern, Rule, rewrite

X = P.any("x")


def _times_half(inner: Pattern) -> list[Pattern]:
    """x * inner * 0.5 in the groupings exporters write: ((x*i)*h), ((x*h)*i), x*(i*h), (x*i)/2."""
    return [
        P.op("mul", P.op("mul", X, inner, commute=True), P.scalar(value=0.5), commute=True),
        P.op("mul", P.op("mul", X, P.scalar(value=0.5), commute=True), inner, commute=True),
        P.op("mul", X, P.op("mul", inner, P.scalar(value=0.5), commute=True), commute=True),
        P.op("div", P.op("mul", X, inner, commute=True), P.scalar(value=2.0)),
    ]


def _one_plus(inner: Pattern) -> Pattern:
    return P.op("add", inner, P.scalar(value=1.0), commute=True)


_ERF_ARG = [
    P.op("div", X, P.scalar(value=math.sqrt(2))),
    P.op("mul", X, P.scalar(value=1 / math.sqrt(2)), commute=True),
]
GELU_ERF = [p for arg in _ERF_ARG for p in _times_half(_one_plus(P.op("erf", arg)))]

_CUBE = [
    P.op("pow", X, P.scalar(value=3.0)),
    P.op("mul", X, P.op("mul", X, X), commute=True),
]
_TANH_ARG = [
    P.op(
        "mul",
        P.op("add", X, P.op("mul", cube, P.scalar(value=0.044715), commute=True), commute=True),
        P.scalar(value=math.sqrt(2 / math.pi)),
        commute=True,
    )
    for cube in _CUBE
]
GELU_TANH = [p for arg in _TANH_ARG for p in _times_half(_one_plus(P.op("tanh", arg)))]

_RELU6 = P.op("clip", P.op("add", X, P.scalar(value=3.0), commute=True), min=0.0, max=6.0)
HARD_SWISH = [
    P.op("div", P.op("mul", X, _RELU6, commute=True), P.scalar(value=6.0)),
    P.op("mul", P.op("mul", X, _RELU6, commute=True), P.scalar(value=1 / 6), commute=True),
    P.op("mul", X, P.op("div", _RELU6, P.scalar(value=6.0)), commute=True),
    P.op("mul", X, P.op("mul", _RELU6, P.scalar(value=1 / 6), commute=True), commute=True),
    P.op(
        "mul",
        X,
        P.op(
            "hard_sigmoid",
            X,
            where=lambda n: abs(n.attrs["alpha"] - 1 / 6) < 1e-6 and abs(n.attrs["beta"] - 0.5) < 1e-6,
        ),
        commute=True,
    ),
]
SILU = [P.op("mul", X, P.op("sigmoid", X), commute=True)]


def _same_shape(m) -> bool:
    root = m.nodes[0]
    return root.output.shape == m["x"].shape and root.output.dtype == m["x"].dtype


def _rules(patterns: list[Pattern], op: str, **attrs) -> list[Rule]:
    return [Rule(p, lambda m, b: b.emit(op, m["x"], **attrs), where=_same_shape) for p in patterns]


RULES = list(
    itertools.chain(
        _rules(GELU_ERF, "gelu", approximate="none"),
        _rules(GELU_TANH, "gelu", approximate="tanh"),
        _rules(HARD_SWISH, "hard_swish"),
        _rules(SILU, "silu"),
    )
)


@register("recognize-activations", "rewrite elementwise GELU (erf, tanh), HardSwish and SiLU forms as one op each")
def recognize_activations(graph: Graph) -> bool:
    return rewrite(graph, RULES)
