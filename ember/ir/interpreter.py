"""Reference interpreter: runs a graph with each op's numpy implementation."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.graph import Graph
from ember.ir.ops import get_schema


def interpret(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate `graph` on numpy inputs; returns outputs by name in the graph's output order."""
    env: dict[int, np.ndarray] = {}
    for v in graph.inputs:
        if v.name not in inputs:
            raise EmberError(f"missing input '{v.name}'", hint=f"inputs: {', '.join(i.name for i in graph.inputs)}")
        arr = np.asarray(inputs[v.name])
        if arr.dtype != dtypes.to_numpy(v.dtype):
            raise EmberError(f"input '{v.name}' must be {v.dtype}, got {arr.dtype}")
        env[id(v)] = arr
    last_use = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            if v is not None:
                last_use[id(v)] = i
    keep = {id(v) for v in graph.outputs}
    for i, node in enumerate(graph.nodes):
        args = [None if v is None else (v.const if v.is_const else env[id(v)]) for v in node.inputs]
        try:
            with np.errstate(all="ignore"):
                results = get_schema(node.op).evaluate(args, node.attrs)
        except EmberError as e:
            raise EmberError(e.message, node=node.name, op=node.op, hint=e.hint) from None
        for out, arr in zip(node.outputs, results):
            env[id(out)] = np.asarray(arr, dtype=dtypes.to_numpy(out.dtype))
        for v in node.inputs:
            if v is not None and last_use.get(id(v)) == i and id(v) not in keep and not v.is_const:
                env.pop(id(v), None)
    return {v.name: (v.const if v.is_const else env[id(v)]) for v in graph.outputs}
