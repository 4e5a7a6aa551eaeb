"""Constant folding through the reference interpreter, with a per-tensor size cap."""

from __future__ import annotations

import logging

import numpy as np

from ember.ir.fold import DEFAULT_FOLD_LIMIT, fold
from ember.ir.graph import Graph
from ember.passes.manager import register

FOLD_LIMIT = {"bytes": DEFAULT_FOLD_LIMIT}
log = logging.getLogger("ember")


@register("fold-constants", "evaluate nodes whose operands are all constants (64 MiB cap per tensor)")
def fold_constants(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        types = [(o.shape, o.dtype) for o in node.outputs]
        values = fold(node.op, node.inputs, node.attrs, types, FOLD_LIMIT["bytes"])
        if values is None:
            continue
        for arr in values:
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                log.warning("fold-constants: node '%s' (%s) folds to a tensor holding NaN or Inf", node.name, node.op)
        for out, arr in zip(node.outputs, values):
            graph.replace_all_uses(out, graph.add_constant(arr, out.name + ".folded"))
        graph.remove_node(node)
        changed = True
    if changed:
        graph.reinfer()
        graph.drop_unused_constants()
    return changed
