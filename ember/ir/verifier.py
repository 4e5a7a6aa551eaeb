"""The verifier: checks a graph's invariants and names the first broken one with its node."""

from __future__ import annotations

import networkx as nx

from ember.errors import EmberError
from ember.ir.graph import Graph
from ember.ir.ops import get_schema


def _fail(msg: str, node=None) -> None:
    raise EmberError(
        f"invalid IR: {msg}", node=None if node is None else node.name, op=None if node is None else node.op
    )


def verify(graph: Graph) -> None:
    """Raise EmberError on the first broken invariant: defs before uses, use lists, types, no cycles."""
    defined = {id(v) for v in graph.inputs}
    names: set[str] = set()
    for v in graph.inputs:
        if v.is_const or v.producer is not None:
            _fail(f"graph input '{v.name}' is a constant or has a producer")
    node_names: set[str] = set()
    for node in graph.nodes:
        if node.name in node_names:
            _fail(f"duplicate node name '{node.name}'", node)
        node_names.add(node.name)
        if node.graph is not graph:
            _fail("node does not belong to this graph", node)
        schema = get_schema(node.op)
        try:
            schema.check_arity(len(node.inputs))
            if schema.complete_attrs(node.attrs) != node.attrs:
                _fail("attributes are not normalized", node)
        except EmberError as e:
            _fail(e.message, node)
        for i, v in enumerate(node.inputs):
            if v is None:
                if not schema.inputs[min(i, len(schema.inputs) - 1)].endswith(("?", "*")):
                    _fail(f"required operand {i} is missing", node)
                continue
            if not v.is_const and id(v) not in defined:
                _fail(f"operand '{v.name}' is used before it is defined (or never defined)", node)
            if (node, i) not in [(n, j) for n, j in v.uses if n is node]:
                _fail(f"use list of '{v.name}' misses this node", node)
            if graph._values.get(v.name) is not v:
                _fail(f"operand '{v.name}' is not registered in the graph", node)
        try:
            types = schema.infer_types(list(node.inputs), node.attrs)
        except EmberError as e:
            _fail(f"type inference fails: {e.message}", node)
        if len(types) != len(node.outputs):
            _fail(f"has {len(node.outputs)} outputs, the op defines {len(types)}", node)
        for out, (shape, dtype) in zip(node.outputs, types):
            if out.producer is not node:
                _fail(f"output '{out.name}' does not point back at its producer", node)
            if (tuple(out.shape), out.dtype) != (tuple(shape), dtype):
                _fail(
                    f"output '{out.name}' is {out.dtype}{list(out.shape)}, inference gives {dtype}{list(shape)}", node
                )
            if out.name in names:
                _fail(f"value '{out.name}' is defined twice", node)
            names.add(out.name)
            defined.add(id(out))
    for v in graph.outputs:
        if not v.is_const and id(v) not in defined:
            _fail(f"graph output '{v.name}' is never defined")
    for v in graph.values:
        for n, i in v.uses:
            if n.graph is not graph or n.inputs[i] is not v:
                _fail(f"use list of '{v.name}' holds a stale entry for node '{n.name}'")
    if not nx.is_directed_acyclic_graph(graph.to_networkx()):
        _fail("graph has a cycle")
