"""The Ember IR text format: one node a line, MLIR-like, with large constants in a sidecar .npz.

graph @main(%x: f32[N,3,8,8]) -> (%pool) {
  weights "model.npz"
  @w = const : f32[4,3,3,3]
  @shape = const dense<[1, -1]> : i64[2]
  %conv = conv2d(%x, @w) {strides=[1,1], pads=[1,1,1,1], dilations=[1,1], group=1} : f32[N,4,8,8]
  %a, %b = split(%x) {axis=1, sizes=[1,2]} : f32[N,1,8,8], f32[N,2,8,8] loc("split_0")
  return %pool
}
"""

from __future__ import annotations

import math
import re

import numpy as np

from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import get_schema

INLINE_LIMIT = 8  # constants with at most this many elements print inline
_BARE = re.compile(r"^[A-Za-z0-9_.$/\-]+$")


def name_ref(value: Value) -> str:
    return ("@" if value.is_const else "%") + quote_name(value.name)


def quote_name(name: str) -> str:
    return name if _BARE.match(name) else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def type_str(shape, dtype: str) -> str:
    return f"{dtype}[{','.join(str(d) for d in shape)}]"


def _scalar(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    f = float(x)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    text = repr(f)
    return text if any(c in text for c in ".en") else text + ".0"


def attr_str(value) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(_scalar(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _scalar(value)


def _float_elem(v: np.floating) -> str:
    text = str(v)  # numpy prints the shortest text that reads back to the same value of its own width
    return text if text in ("inf", "-inf", "nan") or any(c in text for c in ".e") else text + ".0"


def dense_str(array: np.ndarray) -> str:
    if array.dtype.kind == "f":
        flat = [_float_elem(v) for v in array.reshape(-1)]
    else:
        flat = [_scalar(v) for v in array.reshape(-1).tolist()]
    return "dense<" + ("[" + ", ".join(flat) + "]" if array.ndim else flat[0]) + ">"


def node_str(node: Node) -> str:
    outs = ", ".join(name_ref(o) for o in node.outputs)
    args = ", ".join("none" if v is None else name_ref(v) for v in node.inputs)
    schema = get_schema(node.op)
    attrs = ", ".join(f"{k}={attr_str(node.attrs[k])}" for k in schema.attrs)
    types = ", ".join(type_str(o.shape, o.dtype) for o in node.outputs)
    text = f"{outs} = {node.op}({args})" + (f" {{{attrs}}}" if attrs else "") + f" : {types}"
    if node.name != node.outputs[0].name:
        text += f" loc({attr_str(node.name)})"
    return text


def print_graph(
    graph: Graph,
    sidecar: dict[str, np.ndarray] | None = None,
    sidecar_name: str | None = None,
    inline_limit: int = INLINE_LIMIT,
) -> str:
    """Text of `graph`. Constants over `inline_limit` elements go into `sidecar` (name -> array) and
    print by reference; with no sidecar dict given they print inline too."""
    params = ", ".join(f"{name_ref(v)}: {type_str(v.shape, v.dtype)}" for v in graph.inputs)
    results = ", ".join(name_ref(v) for v in graph.outputs)
    lines = [f"graph @{quote_name(graph.name)}({params}) -> ({results}) {{"]
    consts = graph.constants
    if sidecar is not None and sidecar_name and any(c.const.size > inline_limit for c in consts):
        lines.append(f"  weights {attr_str(sidecar_name)}")
    for c in consts:
        ty = type_str(c.shape, c.dtype)
        if sidecar is not None and c.const.size > inline_limit:
            sidecar[c.name] = c.const
            lines.append(f"  {name_ref(c)} = const : {ty}")
        else:
            lines.append(f"  {name_ref(c)} = const {dense_str(c.const)} : {ty}")
    lines.extend("  " + node_str(n) for n in graph.nodes)
    lines.append(f"  return {results}")
    lines.append("}")
    return "\n".join(lines) + "\n"
