"""Grouped (not depthwise) NHWC CPU convs whose outputs per group are no multiple of GROUP_LANES compute each
group padded to one with zero weights, then a copy drops the padding: the Conv2D rule's lane tiles must divide
a group (a tile across two groups gathers its inputs), and ShuffleNet's groups of 34 outputs took tiles of 2
lanes. ShuffleNet (cpu_latency.py, 2 threads): 1.63-1.69x onnxruntime's latency before, 1.11x after."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax import op as R

from ember.ir.graph import Node

GROUP_LANES = 8


def padded_outputs(node: Node, device: str) -> int | None:
    """Conv2d `node`'s outputs per group rounded up to GROUP_LANES, or None where nothing is padded."""
    at, w = node.attrs, node.inputs[1]
    if device != "cpu" or at["layout"] != "NHWC" or at["group"] == 1 or not w.is_const or w.shape[2] == 1:
        return None
    per_group = w.shape[3] // at["group"]
    if per_group % GROUP_LANES == 0 or per_group < GROUP_LANES or not node.output.is_static:
        return None
    return -(-per_group // GROUP_LANES) * GROUP_LANES


def pad_weight(w_hwio: np.ndarray, groups: int, per_group: int) -> np.ndarray:
    """The HWIO weight with zero output channels closing each group up to `per_group`."""
    kh, kw, cg, k = w_hwio.shape
    w = w_hwio.reshape(kh, kw, cg, groups, k // groups)
    return np.pad(w, [(0, 0)] * 4 + [(0, per_group - k // groups)]).reshape(kh, kw, cg, groups * per_group)


def drop_padding(bb: relax.BlockBuilder, y: relax.Expr, shape, groups: int, per_group: int) -> relax.Expr:
    """The [N, H, W, K] outputs of a padded conv's result `y` ([N, H, W, groups * per_group])."""
    n, h, w, k = shape
    y = bb.emit(R.reshape(y, (n, h, w, groups, per_group)))
    return R.reshape(R.strided_slice(y, axes=[4], begin=[0], end=[k // groups]), (n, h, w, k))
