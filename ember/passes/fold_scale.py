"""Fold a constant per-channel Mul (or Div) after conv2d or dense into the layer's weights and bias."""

from __future__ import annotations

import numpy as np

from ember.ir.graph import Graph
from ember.passes.affine import LAYER, channel_vector
from ember.passes.manager import register
from ember.passes.pattern import P, Rule, rewrite


def _fold(divide: bool):
    def build(m, b):
        layer = m["layer"]
        vec = channel_vector(layer, m["s"].const)
        if vec is None or (divide and not np.all(vec != 0)):
            return None
        s = 1.0 / vec.astype(np.float64) if divide else vec.astype(np.float64)
        w = m["w"].const
        new_w = w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))
        bias = m["b"].const.astype(np.float64) * s if m["b"] is not None else None
        args = [m["x"], b.const(new_w.astype(w.dtype))]
        if bias is not None:
            args.append(b.const(bias.astype(w.dtype)))
        return b.emit(layer.op, *args, **layer.attrs)

    return build


RULES = [
    Rule(P.op("mul", LAYER, P.const("s")), _fold(False)),
    Rule(P.op("mul", P.const("s"), LAYER), _fold(False)),
    Rule(P.op("div", LAYER, P.const("s")), _fold(True)),
]


@register("fold-scale", "fold a constant per-channel mul/div after conv2d/dense into its weights")
def fold_scale(graph: Graph) -> bool:
    return rewrite(graph, RULES)
