"""Elementwise ops: unary activations and math, broadcasting binaries, where, cast."""

from __future__ import annotations

import numpy as np

from ember.errors import EmberError
from ember.ir.ops.registry import Attr, op, reference
from ember.ir.ops.shapes import broadcast


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to ~1e-7 absolute error (Abramowitz & Stegun 7.1.26) without scipy."""
    z = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (np.sign(x) * (1.0 - poly * np.exp(-z * z))).astype(x.dtype)


def _sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(x.dtype)


def _gelu(x, a):
    xd = x.astype(np.float64)
    if a["approximate"] == "tanh":
        y = 0.5 * xd * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (xd + 0.044715 * xd**3)))
    else:
        y = 0.5 * xd * (1.0 + _erf(xd / np.sqrt(2.0)))
    return y.astype(x.dtype)


# name: (numpy reference taking (x, attrs), doc, attrs)
UNARY = {
    "relu": (lambda x, a: np.maximum(x, 0).astype(x.dtype), "max(x, 0)", {}),
    "sigmoid": (lambda x, a: _sigmoid(x), "1 / (1 + exp(-x))", {}),
    "tanh": (lambda x, a: np.tanh(x), "hyperbolic tangent", {}),
    "exp": (lambda x, a: np.exp(x), "e^x", {}),
    "log": (lambda x, a: np.log(x), "natural logarithm", {}),
    "sqrt": (lambda x, a: np.sqrt(x), "square root", {}),
    "erf": (lambda x, a: _erf(x), "Gauss error function", {}),
    "neg": (lambda x, a: np.negative(x), "-x", {}),
    "abs": (lambda x, a: np.abs(x), "|x|", {}),
    "reciprocal": (lambda x, a: (1 / x).astype(x.dtype), "1 / x", {}),
    "floor": (lambda x, a: np.floor(x), "round down", {}),
    "ceil": (lambda x, a: np.ceil(x), "round up", {}),
    "round": (lambda x, a: np.round(x), "round half to even", {}),
    "sign": (lambda x, a: np.sign(x), "sign of x", {}),
    "sin": (lambda x, a: np.sin(x), "sine", {}),
    "cos": (lambda x, a: np.cos(x), "cosine", {}),
    "tan": (lambda x, a: np.tan(x), "tangent", {}),
    "atan": (lambda x, a: np.arctan(x), "arctangent", {}),
    "asin": (lambda x, a: np.arcsin(x), "arcsine", {}),
    "acos": (lambda x, a: np.arccos(x), "arccosine", {}),
    "sinh": (lambda x, a: np.sinh(x), "hyperbolic sine", {}),
    "cosh": (lambda x, a: np.cosh(x), "hyperbolic cosine", {}),
    "asinh": (lambda x, a: np.arcsinh(x), "inverse hyperbolic sine", {}),
    "acosh": (lambda x, a: np.arccosh(x), "inverse hyperbolic cosine", {}),
    "atanh": (lambda x, a: np.arctanh(x), "inverse hyperbolic tangent", {}),
    "not": (lambda x, a: np.logical_not(x), "logical not", {}),
    "isnan": (lambda x, a: np.isnan(x), "x is NaN", {}),
    "bitwise_not": (lambda x, a: np.invert(x), "~x, bit by bit (integers)", {}),
    "identity": (lambda x, a: x, "x", {}),
    "softplus": (lambda x, a: np.log1p(np.exp(x)).astype(x.dtype), "log(1 + e^x)", {}),
    "silu": (lambda x, a: (x * _sigmoid(x)).astype(x.dtype), "x * sigmoid(x)", {}),
    "hard_swish": (
        lambda x, a: (x * np.clip(x / 6.0 + 0.5, 0, 1)).astype(x.dtype),
        "x * clip(x/6 + 1/2, 0, 1)",
        {},
    ),
    "hard_sigmoid": (
        lambda x, a: np.clip(a["alpha"] * x + a["beta"], 0, 1).astype(x.dtype),
        "clip(alpha*x + beta, 0, 1)",
        {"alpha": 0.2, "beta": 0.5},
    ),
    "leaky_relu": (
        lambda x, a: np.where(x >= 0, x, a["alpha"] * x).astype(x.dtype),
        "x if x >= 0 else alpha*x",
        {"alpha": 0.01},
    ),
    "elu": (
        lambda x, a: np.where(x >= 0, x, a["alpha"] * (np.exp(x) - 1)).astype(x.dtype),
        "x if x >= 0 else alpha*(e^x - 1)",
        {"alpha": 1.0},
    ),
    "clip": (
        lambda x, a: np.clip(x, a["min"], a["max"]).astype(x.dtype),
        "min(max(x, min), max)",
        {"min": float("-inf"), "max": float("inf")},
    ),
    "gelu": (_gelu, "x * Phi(x) (erf) or its tanh approximation", {"approximate": "none"}),
}

_BOOL_OUT = {"equal", "less", "greater", "less_equal", "greater_equal", "and", "or", "xor"}


def _div(a, b):
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)
    return np.divide(a, b).astype(a.dtype)


BINARY = {
    "add": (np.add, "a + b"),
    "sub": (np.subtract, "a - b"),
    "mul": (np.multiply, "a * b"),
    "div": (_div, "a / b (integer division truncates)"),
    "pow": (lambda a, b: np.power(a, b).astype(a.dtype), "a ^ b"),
    "max": (np.maximum, "elementwise maximum"),
    "min": (np.minimum, "elementwise minimum"),
    "mod": (np.fmod, "remainder with the sign of a (C's fmod)"),
    "floor_mod": (np.mod, "remainder with the sign of b (Python's %)"),
    "equal": (np.equal, "a == b"),
    "less": (np.less, "a < b"),
    "greater": (np.greater, "a > b"),
    "less_equal": (np.less_equal, "a <= b"),
    "greater_equal": (np.greater_equal, "a >= b"),
    "and": (np.logical_and, "logical and"),
    "or": (np.logical_or, "logical or"),
    "xor": (np.logical_xor, "logical xor"),
    "bitwise_and": (np.bitwise_and, "a & b (integers)"),
    "bitwise_or": (np.bitwise_or, "a | b (integers)"),
    "bitwise_xor": (np.bitwise_xor, "a ^ b (integers)"),
    "left_shift": (np.left_shift, "a << b (integers)"),
    "right_shift": (np.right_shift, "a >> b (integers; arithmetic for signed a)"),
}


def _register_unary(name: str, fn, doc: str, attrs: dict) -> None:
    def infer(ins, a, _name=name):
        (x,) = ins
        return x.shape, ("bool" if _name in ("not", "isnan") else x.dtype)

    schema = op(name, "x", doc, tags=("elementwise", "unary"), **attrs)(infer)
    reference(schema)(lambda x, a, _fn=fn: np.asarray(_fn(x, a)))


def _register_binary(name: str, fn, doc: str) -> None:
    def infer(ins, a, _name=name):
        x, y = ins
        if x.dtype != y.dtype:
            raise EmberError(f"operand dtypes differ: {x.dtype} and {y.dtype}")
        return broadcast(x.shape, y.shape), ("bool" if _name in _BOOL_OUT else x.dtype)

    schema = op(name, "a b", doc, tags=("elementwise", "binary"))(infer)
    reference(schema)(lambda x, y, a, _fn=fn: np.asarray(_fn(x, y)))


for _name, (_fn, _doc, _attrs) in UNARY.items():
    _register_unary(_name, _fn, _doc, _attrs)
for _name, (_fn, _doc) in BINARY.items():
    _register_binary(_name, _fn, _doc)


@op("where", "cond a b", "a where cond else b", tags=("elementwise",))
def where(ins, a):
    c, x, y = ins
    if x.dtype != y.dtype:
        raise EmberError(f"operand dtypes differ: {x.dtype} and {y.dtype}")
    if c.dtype != "bool":
        raise EmberError(f"condition must be bool, got {c.dtype}")
    return broadcast(c.shape, x.shape, y.shape), x.dtype


@reference(where)
def _where(c, x, y, a):
    return np.where(c, x, y)


@op("cast", "x", "convert to another element type", tags=("elementwise", "unary"), to=Attr("dtype"))
def cast(ins, a):
    return ins[0].shape, a["to"]


@reference(cast)
def _cast(x, a):
    from ember.ir.dtypes import to_numpy

    return x.astype(to_numpy(a["to"]))
