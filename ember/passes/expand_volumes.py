"""Run 3-D convolutions and pools as the 2-D ops of their decompositions (ember.ir.ops.volume), early enough that
layout conversion, fusion and the conv2d schedules see those 2-D ops."""

from __future__ import annotations

import numpy as np

from ember.ir.graph import Graph
from ember.ir.ops import get_schema
from ember.passes.manager import register
from ember.passes.pattern import P, Rule, rewrite

VOLUME = P.op(
    ("conv3d", "conv3d_transpose", "max_pool3d", "avg_pool3d"),
    P.any("x"),
    P.opt(P.any("w")),
    P.opt(P.any("b")),
    name="v",
)


def _expand(m, b):
    node = m["v"]

    def emit(op: str, *inputs, **attrs):
        return b.emit(op, *(b.const(x) if isinstance(x, np.ndarray) else x for x in inputs), **attrs)

    return get_schema(node.op).decompose(node, emit)


@register("expand-volumes", "run 3-D convs and pools as 2-D ones over their depth slices")
def expand_volumes(graph: Graph) -> bool:
    return rewrite(graph, [Rule(VOLUME, _expand)])
