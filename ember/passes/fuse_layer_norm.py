"""Recognize LayerNorm written out as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div, and fold the affine
Mul/Add that follows into its scale and bias."""

from __future__ import annotations

import numpy as np

from ember.ir import dtypes
from ember.ir.graph import Graph
from ember.passes.manager import register
from ember.passes.pattern import P, Rule, rewrite


def _suffix_axes(node) -> bool:
    """keepdims reduction over trailing axes only."""
    rank = node.inputs[0].rank
    axes = sorted(a % rank for a in node.attrs["axes"]) if node.attrs["axes"] else list(range(rank))
    return bool(node.attrs["keepdims"]) and axes == list(range(rank - len(axes), rank))


X = P.any("x")
MEAN = P.op("reduce_mean", X, name="mu", where=_suffix_axes)
DEV = P.op("sub", X, MEAN, name="dev", shared=True)
SQUARE = [P.op("pow", DEV, P.scalar(value=2.0)), P.op("mul", DEV, DEV)]
STD = [
    P.op("sqrt", P.op("add", P.op("reduce_mean", sq, name="var", where=_suffix_axes), P.scalar("eps"), commute=True))
    for sq in SQUARE
]
NORMALIZED = [
    p for std in STD for p in (P.op("div", DEV, std), P.op("mul", DEV, P.op("reciprocal", std), commute=True))
]


def _build(m, b):
    x, mu, var = m["x"], m["mu"], m["var"]
    if mu.attrs["axes"] != var.attrs["axes"] or not x.is_static or m.nodes[0].output.shape != x.shape:
        return None
    n_axes = len(mu.attrs["axes"]) or x.rank
    axis = x.rank - n_axes
    eps = float(m["eps"].const.reshape(-1)[0])
    if eps < 0:
        return None
    ones = b.const(np.ones(x.shape[axis:], dtype=dtypes.to_numpy(x.dtype)))
    return b.emit("layer_norm", x, ones, axis=axis, epsilon=eps)


LN = P.op("layer_norm", P.any("x"), P.const("s"), P.opt(P.const("b")), name="ln")


def _trailing(m, c: np.ndarray) -> np.ndarray | None:
    """`c` as an array over the normalized axes, when it broadcasts over nothing else."""
    x, axis = m["x"], m["ln"].attrs["axis"] % m["x"].rank
    if c.ndim > x.rank or not all(isinstance(d, int) for d in x.shape[axis:]):
        return None
    full = c.reshape((1,) * (x.rank - c.ndim) + c.shape)
    if any(d != 1 for d in full.shape[:axis]):
        return None
    try:
        return np.broadcast_to(full.reshape(full.shape[axis:]), x.shape[axis:])
    except ValueError:
        return None


def _scaled(m, b):
    g = _trailing(m, m["c"].const)
    if g is None:
        return None
    s = m["s"].const * g
    bias = None if m["b"] is None else b.const((m["b"].const * g).astype(s.dtype))
    return b.emit("layer_norm", m["x"], b.const(s.astype(m["s"].const.dtype)), bias, **m["ln"].attrs)


def _shifted(m, b):
    beta = _trailing(m, m["c"].const)
    if beta is None:
        return None
    old = np.zeros_like(beta) if m["b"] is None else m["b"].const
    return b.emit("layer_norm", m["x"], m["s"], b.const((old + beta).astype(m["s"].const.dtype)), **m["ln"].attrs)


RULES = [Rule(p, _build) for p in NORMALIZED] + [
    Rule(P.op("mul", LN, P.const("c"), commute=True), _scaled),
    Rule(P.op("add", LN, P.const("c"), commute=True), _shifted),
]


@register("fuse-layer-norm", "rewrite the elementwise LayerNorm form as layer_norm and fold the affine ops after it")
def fuse_layer_norm(graph: Graph) -> bool:
    return rewrite(graph, RULES)
