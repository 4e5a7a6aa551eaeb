"""Fold inference-mode batch_norm into the convolution (2-D or 3-D) that feeds it."""

from __future__ import annotations

import numpy as np

from ember.ir.graph import Graph
from ember.passes.affine import CONVS, nchw
from ember.passes.manager import register
from ember.passes.pattern import P, Rule, rewrite

CONV_BN = P.op(
    "batch_norm",
    P.op(CONVS, P.any("x"), P.const("w"), P.opt(P.const("b")), name="conv", where=nchw),
    P.const("scale"),
    P.const("shift"),
    P.const("mean"),
    P.const("var"),
    name="bn",
)


def _fold(m, b):
    w = m["w"].const.astype(np.float64)
    inv = m["scale"].const / np.sqrt(m["var"].const.astype(np.float64) + m["bn"].attrs["epsilon"])
    bias = m["b"].const if m["b"] is not None else np.zeros(w.shape[0])
    new_w = w * inv.reshape((-1,) + (1,) * (w.ndim - 1))
    new_b = (bias - m["mean"].const) * inv + m["shift"].const
    dtype = m["w"].const.dtype
    return b.emit(m["conv"].op, m["x"], b.const(new_w.astype(dtype)), b.const(new_b.astype(dtype)), **m["conv"].attrs)


@register("fuse-conv-bn", "fold batch_norm with constant statistics into the preceding conv's weights")
def fuse_conv_bn(graph: Graph) -> bool:
    return rewrite(graph, [Rule(CONV_BN, _fold)])
