"""Constant folding through the reference interpreter, with a per-tensor size cap (see `ember.ir.fold`)."""

from __future__ import annotations

from ember.ir.fold import fold
from ember.ir.graph import Graph
from ember.passes.manager import register


@register("fold-constants", "evaluate nodes whose operands are all constants (per-tensor cap: --fold-limit, 64 MiB)")
def fold_constants(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        types = [(o.shape, o.dtype) for o in node.outputs]
        values = fold(node.op, node.inputs, node.attrs, types, node=node.name, stage="fold-constants")
        if values is None:
            continue
        for out, arr in zip(node.outputs, values):
            graph.replace_all_uses(out, graph.add_constant(arr, out.name + ".folded"))
        graph.remove_node(node)
        changed = True
    if changed:
        graph.reinfer()
        graph.drop_unused_constants()
    return changed
