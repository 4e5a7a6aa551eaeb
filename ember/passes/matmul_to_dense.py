"""Turn matmul by a constant 2-D matrix (plus a following constant bias add) into dense."""

from __future__ import annotations

import numpy as np

from ember.ir.graph import Graph
from ember.passes.manager import register
from ember.passes.pattern import P, Rule, rewrite


def _to_dense(m, b):
    x = m["x"]
    if x.rank < 2:
        return None
    w = b.const(np.ascontiguousarray(m["w"].const.T))
    return b.emit("dense", x, w)


RULES = [Rule(P.op("matmul", P.any("x"), P.const("w", where=lambda a: a.ndim == 2)), _to_dense)]


@register("matmul-to-dense", "rewrite matmul by a constant matrix as dense (x @ W^T layout, biases merge next)")
def matmul_to_dense(graph: Graph) -> bool:
    return rewrite(graph, RULES)
