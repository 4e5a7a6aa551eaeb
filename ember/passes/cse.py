"""Common-subexpression elimination: one node per (op, operands, attributes); equal small constants merge."""

from __future__ import annotations

from ember.ir.graph import Graph, Value
from ember.passes.manager import register

SMALL_CONST = 4096  # elements; larger constants are compared by identity only


def _const_key(v: Value):
    return ("const", v.dtype, v.shape, v.const.tobytes()) if v.const.size <= SMALL_CONST else ("id", id(v))


@register("cse", "merge nodes that compute the same thing from the same operands")
def eliminate_common_subexpressions(graph: Graph) -> bool:
    changed = False
    canon: dict = {}
    for c in graph.constants:
        key = _const_key(c)
        keep = canon.setdefault(key, c)
        if keep is not c and graph.can_replace(c, keep):
            graph.replace_all_uses(c, keep)
            changed = True
    seen: dict = {}
    for node in list(graph.nodes):
        key = (node.op, tuple(id(v) if v is not None else None for v in node.inputs), tuple(sorted(node.attrs.items())))
        other = seen.setdefault(key, node)
        if other is node:
            continue
        if not all(graph.can_replace(a, b) for a, b in zip(node.outputs, other.outputs)):
            continue
        for a, b in zip(node.outputs, other.outputs):
            graph.replace_all_uses(a, b)
        graph.remove_node(node)
        changed = True
    if changed:
        graph.drop_unused_constants()
    return changed
