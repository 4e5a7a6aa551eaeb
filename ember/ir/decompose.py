"""Expanding a composite node into the primitive nodes it stands for, without touching its graph."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ember.ir import dtypes
from ember.ir.graph import Node, Value
from ember.ir.ops import get_schema


def decompose(node: Node, expand: Callable | None = None) -> list[Node]:
    """Detached primitive nodes computing `node` (a composite op, or any op when `expand(node, emit)` is
    given); the last one writes `node`'s output. Temporaries are named after the node; constants they
    need are Values holding their array."""
    nodes: list[Node] = []

    def emit(op: str, *inputs: Value | np.ndarray | None, **attrs: Any) -> Value:
        name = f"{node.name}__{op}{len(nodes)}"
        ins = [
            Value(f"{name}_c{i}", x.shape, dtypes.from_numpy(x.dtype), x) if isinstance(x, np.ndarray) else x
            for i, x in enumerate(inputs)
        ]
        schema = get_schema(op)
        sub = Node(op, name, schema.complete_attrs(attrs))
        sub.inputs = ins
        for shape, dtype in schema.infer_types(ins, sub.attrs):
            out = Value(name, shape, dtype)
            out.producer = sub
            sub.outputs.append(out)
        nodes.append(sub)
        return sub.output

    expand = expand or get_schema(node.op).decompose
    if expand is None:
        return [node]
    result = expand(node, emit)
    if not nodes or nodes[-1].output is not result:
        raise AssertionError(f"expansion of '{node.op}' must end with the node producing its result")
    nodes[-1].outputs = list(node.outputs)
    nodes[-1].name = node.name
    return nodes
