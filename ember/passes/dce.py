"""Dead-code elimination: drop nodes whose outputs reach no graph output."""

from __future__ import annotations

from ember.ir.graph import Graph
from ember.passes.manager import register


@register("dce", "remove nodes whose results no graph output depends on")
def eliminate_dead_code(graph: Graph) -> bool:
    live = {id(v) for v in graph.outputs}
    dead = []
    for node in reversed(graph.nodes):
        if any(id(o) in live for o in node.outputs):
            live.update(id(v) for v in node.inputs if v is not None)
        else:
            dead.append(node)
    for node in dead:
        for out in node.outputs:
            out.uses = []
        graph.remove_node(node)
    graph.drop_unused_constants()
    return bool(dead)
