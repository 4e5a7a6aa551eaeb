"""Shared checks for folding constant affine operations (add/mul by per-channel constants) into layers."""

from __future__ import annotations

import numpy as np

from ember.ir.graph import Node
from ember.passes.pattern import P


def nchw(node: Node) -> bool:
    """Not an NHWC layer: the affine folds assume output channels on axis 1 and OIHW weights."""
    return node.attrs.get("layout", "NCHW") == "NCHW"


CONVS = ("conv2d", "conv3d")  # output channels on axis 1, weights [O, C/group, *kernel]
# A conv or dense with constant weights (and bias, when present): the layers affine ops fold into.
LAYER = P.op((*CONVS, "dense"), P.any("x"), P.const("w"), P.opt(P.const("b")), name="layer", where=nchw)


def channel_vector(node: Node, const: np.ndarray) -> np.ndarray | None:
    """`const` as one value per output channel of `node` (a conv: axis 1 of NCHW or NCDHW; dense: last axis),
    or None when it broadcasts over anything else or would change the result's shape."""
    out = node.output
    axis = 1 if node.op in CONVS else out.rank - 1
    channels = out.shape[axis]
    if const.ndim > out.rank or not isinstance(channels, int):
        return None
    shape = (1,) * (out.rank - const.ndim) + const.shape
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(const.reshape(-1), (channels,)).astype(const.dtype)
