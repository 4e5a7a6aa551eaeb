"""Canonicalization: no-op removal, merged reshape/transpose chains, squeezes sunk below elementwise ops (to
meet the next unsqueeze, and both go), CSE and DCE."""

from __future__ import annotations

import numpy as np

from ember.ir.graph import Graph
from ember.ir.ops import all_schemas
from ember.ir.ops.shapes import UNKNOWN, norm_axis
from ember.passes.cse import eliminate_common_subexpressions
from ember.passes.dce import eliminate_dead_code
from ember.passes.manager import register
from ember.passes.pattern import P, Rule, rewrite

RESHAPES = ("reshape", "flatten", "squeeze", "unsqueeze")


def _same_shape(node, operand: int = 0) -> bool:
    x = node.inputs[operand]
    return node.output.shape == x.shape and node.output.dtype == x.dtype


def _same_known_shape(node) -> bool:
    """A reshape is a no-op only when its result's dims are all known: '?' dims can differ at run time."""
    return _same_shape(node) and UNKNOWN not in node.output.shape


def _all(value: float):
    return lambda a: a.size > 0 and bool(np.all(a == value))


def _neutral(op: str, value: float, const_first: bool = False) -> Rule:
    pat = (
        P.op(op, P.const(where=_all(value)), P.any("x"), where=lambda n: _same_shape(n, 1), name="n")
        if const_first
        else P.op(op, P.any("x"), P.const(where=_all(value)), where=_same_shape, name="n")
    )
    return Rule(pat, lambda m, b: m["x"])


def _merged_reshape(m, b):
    node = m["outer"]
    shape = b.const(np.array(node.output.shape, dtype=np.int64))
    return b.emit("reshape", m["x"], shape)


def _merged_transpose(m, b):
    p1, p2 = m["inner"].attrs["perm"], m["outer"].attrs["perm"]
    perm = [p1[i] for i in p2]
    return m["x"] if perm == sorted(perm) else b.emit("transpose", m["x"], perm=perm)


def _static(node) -> bool:
    return node.output.is_static


def _ops_tagged(*tags: str) -> tuple[str, ...]:
    return tuple(name for name, schema in all_schemas().items() if set(tags) <= schema.tags)


UNARY, BINARY = _ops_tagged("elementwise", "unary"), _ops_tagged("elementwise", "binary")  # convert_layout's too
SAME_SHAPE_BINARY = (*BINARY, "qadd")  # qadd: an elementwise add of two tensors of one shape, in any layout
SQUEEZE = P.op("squeeze", P.any("x"), name="sq")


def _squeezed(m) -> list[int]:
    return sorted(norm_axis(a, m["x"].rank) for a in m["sq"].attrs["axes"])


def _sink_unary(m, b):
    """op(squeeze(x)) -> squeeze(op(x)): a 1-D layer's result, lifted to 2-D, meets the next layer unsqueezed."""
    node = m["u"]
    if node.op == "batch_norm" and min(_squeezed(m)) < 2:  # its channel axis must stay axis 1
        return None
    y = b.emit(node.op, m["x"], *node.inputs[1:], **node.attrs)
    return b.emit("squeeze", y, axes=_squeezed(m))


def _sink_binary(m, b):
    """squeeze(x) op squeeze(y) -> squeeze(x op y), the two squeezes alike (a residual add of 1-D layers)."""
    axes = _squeezed(m)
    if m["y"].shape != m["x"].shape or sorted(norm_axis(a, m["y"].rank) for a in m["sq2"].attrs["axes"]) != axes:
        return None
    return b.emit("squeeze", b.emit(m["bin"].op, m["x"], m["y"], **m["bin"].attrs), axes=axes)


def _sink_binary_const(const_first: bool):
    def build(m, b):
        axes, c, rank = _squeezed(m), m["c"].const, m["bin"].output.rank
        if c.ndim > rank or m["x"].rank != rank + len(axes):
            return None
        lifted = b.const(np.expand_dims(c.reshape((1,) * (rank - c.ndim) + c.shape), axes))
        args = (lifted, m["x"]) if const_first else (m["x"], lifted)
        return b.emit("squeeze", b.emit(m["bin"].op, *args, **m["bin"].attrs), axes=axes)

    return build


RULES = [
    Rule(P.op("identity", P.any("x")), lambda m, b: m["x"]),
    Rule(P.op(RESHAPES, P.any("x"), P.opt(P.any()), where=_same_known_shape), lambda m, b: m["x"]),
    Rule(
        P.op("transpose", P.any("x"), where=lambda n: list(n.attrs["perm"]) == sorted(n.attrs["perm"])),
        lambda m, b: m["x"],
    ),
    Rule(P.op("cast", P.any("x"), where=_same_shape), lambda m, b: m["x"]),
    Rule(P.op("expand", P.any("x"), P.any(), where=_same_known_shape), lambda m, b: m["x"]),
    # a where whose condition is constant and uniform picks one operand (the ONNX Attention function's
    # fully-masked-row guard, when there is no mask)
    Rule(
        P.op("where", P.const(where=_all(True)), P.any("x"), P.any(), where=lambda n: _same_shape(n, 1)),
        lambda m, b: m["x"],
    ),
    Rule(
        P.op("where", P.const(where=_all(False)), P.any(), P.any("y"), where=lambda n: _same_shape(n, 2)),
        lambda m, b: m["y"],
    ),
    _neutral("add", 0.0),
    _neutral("add", 0.0, const_first=True),
    _neutral("sub", 0.0),
    _neutral("mul", 1.0),
    _neutral("mul", 1.0, const_first=True),
    _neutral("div", 1.0),
    Rule(
        P.op(
            RESHAPES,
            P.op(RESHAPES, P.any("x"), P.opt(P.any()), name="inner"),
            P.opt(P.any()),
            name="outer",
            where=_static,
        ),
        _merged_reshape,
    ),
    Rule(P.op("transpose", P.op("transpose", P.any("x"), name="inner", shared=True), name="outer"), _merged_transpose),
    Rule(P.op(UNARY, SQUEEZE, name="u"), _sink_unary),
    Rule(P.op("batch_norm", SQUEEZE, *[P.any()] * 4, name="u"), _sink_unary),
    Rule(P.op(SAME_SHAPE_BINARY, SQUEEZE, P.op("squeeze", P.any("y"), name="sq2"), name="bin"), _sink_binary),
    Rule(P.op(BINARY, SQUEEZE, P.const("c"), name="bin"), _sink_binary_const(False)),
    Rule(P.op(BINARY, P.const("c"), SQUEEZE, name="bin"), _sink_binary_const(True)),
]


def _drop_empty_concat_operands(graph: Graph) -> bool:
    """concat(a, empty, b) -> concat(a, b), and concat(a, empty) -> a: an operand with no elements along the
    axis adds nothing (as a partial rotary embedding's unrotated part), and no kernel can loop over it."""
    changed = False
    for node in [n for n in graph.nodes if n.op == "concat" and len(n.inputs) > 1]:
        axis = norm_axis(node.attrs["axis"], node.output.rank)
        kept = [v for v in node.inputs if v.shape[axis] != 0]
        if len(kept) in (0, len(node.inputs)):
            continue
        new = kept[0]
        if len(kept) > 1:
            new = graph.add_node("concat", kept, {"axis": axis}, node.name, before=node).output
        if graph.can_replace(node.output, new):
            graph.replace_all_uses(node.output, new)
            changed = True
    return changed


@register("canonicalize", "remove no-ops, merge reshape and transpose chains, empty concat operands, then CSE and DCE")
def canonicalize(graph: Graph) -> bool:
    changed = rewrite(graph, RULES)
    changed |= _drop_empty_concat_operands(graph)
    changed |= eliminate_common_subexpressions(graph)
    changed |= eliminate_dead_code(graph)
    return changed
