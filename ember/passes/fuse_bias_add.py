"""Merge a constant per-channel Add that follows conv2d or dense into the layer's bias."""

from __future__ import annotations

import numpy as np

from ember.ir.graph import Graph
from ember.passes.affine import LAYER, channel_vector
from ember.passes.manager import register
from ember.passes.pattern import P, Rule, rewrite


def _merge(m, b):
    layer = m["layer"]
    add = m["c"].const
    vec = channel_vector(layer, add)
    if vec is None:
        return None
    bias = m["b"].const if m["b"] is not None else np.zeros_like(vec)
    new_b = b.const((bias.astype(np.float64) + vec).astype(vec.dtype))
    return b.emit(layer.op, m["x"], m["w"], new_b, **layer.attrs)


RULES = [Rule(P.op("add", LAYER, P.const("c")), _merge), Rule(P.op("add", P.const("c"), LAYER), _merge)]


@register("fuse-bias-add", "merge a constant per-channel add after conv2d/dense into the layer's bias")
def fuse_bias_add(graph: Graph) -> bool:
    return rewrite(graph, RULES)
