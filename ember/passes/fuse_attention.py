"""Recognize scaled-dot-product attention as exporters write it: softmax(q @ k^T * scale [+ mask]) @ v."""

from __future__ import annotations

import numpy as np

from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.graph import Graph
from ember.ir.ops.shapes import broadcast
from ember.passes.manager import register
from ember.passes.pattern import P, Rule, rewrite


def _scalar(m, name: str) -> float:
    return float(m[name].const.reshape(-1)[0])


# Scalar factors hoisted out of matmul operands (torch's exporter scales q and k by sqrt(scale) each).
def _hoist(first: bool):
    """matmul(a * s, c) -> matmul(a, c) * s (or with the scaled operand second)."""

    def build(m, b):
        s, op = m["s"].const, m["op"]
        if op.output.shape != m["a"].shape or not np.all(np.isfinite(s)) or not np.all(s != 0):
            return None  # the factor would broadcast the result, or inf/nan/0 do not commute with the sum
        y = b.emit("matmul", m["a"], m["c"]) if first else b.emit("matmul", m["c"], m["a"])
        return b.emit(op.op, y, m["s"])

    return build


def _scaled_operands() -> list:
    return [
        P.op("mul", P.any("a"), P.scalar("s"), name="op", commute=True),
        P.op("div", P.any("a"), P.scalar("s"), name="op"),
    ]


HOIST = [Rule(P.op("matmul", operand, P.any("c")), _hoist(first=True)) for operand in _scaled_operands()] + [
    Rule(P.op("matmul", P.any("c"), operand), _hoist(first=False)) for operand in _scaled_operands()
]
HOIST.append(
    Rule(
        P.op("mul", P.op("mul", P.any("a"), P.scalar("s1"), commute=True), P.scalar("s2"), commute=True),
        lambda m, b: b.emit("mul", m["a"], b.const(m["s1"].const * m["s2"].const)),
        where=lambda m: m.nodes[0].output.shape == m["a"].shape,
    )
)

MM = P.op("matmul", P.any("q"), P.any("kt"), name="mm")
SCALED = [
    (MM, None),
    (P.op("mul", MM, P.scalar("s"), commute=True), "mul"),
    (P.op("div", MM, P.scalar("s")), "div"),
]


def _masked(scaled):
    return [
        (scaled, None),
        (P.op("add", scaled, P.any("bias"), commute=True), "add"),
        (P.op("where", P.any("mask"), scaled, P.scalar("neg")), "where"),
    ]


def _last_axis(node) -> bool:
    return node.attrs["axis"] % node.output.rank == node.output.rank - 1


def _is_mask(mask, fill: float) -> bool:
    """where(mask, s, fill) equals s + where(mask, 0, fill) under softmax only when the fill is far below any
    score (-1e4 and lower: exp underflows) and every row keeps at least one position."""
    return mask.is_const and fill <= -1e4 and bool(np.all(np.any(mask.const, axis=-1))) if mask.rank else False


def _shapes_fit(q, kt, v, bias) -> bool:
    """Whether q [..., Sq, D], k^T [..., D, Sk], v [..., Sk, Dv] and bias make one attention, batch dims equal."""
    if not (q[:-2] == kt[:-2] == v[:-2] and q[-1] == kt[-2] and kt[-1] == v[-2]):
        return False
    scores = (*q[:-1], kt[-1])
    try:
        return bias is None or broadcast(scores, bias) == scores
    except EmberError:
        return False


def _build(scale_kind: str | None, mask_kind: str | None):
    def build(m, b):
        q, kt, v = m["q"], m["kt"], m["v"]
        if q.rank < 2 or not q.rank == kt.rank == v.rank:
            return None
        scale = 1.0 if scale_kind is None else _scalar(m, "s")
        if scale_kind == "div":
            scale = 1.0 / scale if scale != 0 else None
        if scale is None:
            return None
        bias = m.get("bias")
        dt = dtypes.to_numpy(q.dtype)
        if mask_kind == "where":
            mask = m["mask"]
            if not _is_mask(mask, _scalar(m, "neg")):
                return None
            bias = b.const(np.where(mask.const, 0.0, _scalar(m, "neg")).astype(dt))
        if not _shapes_fit(q.shape, kt.shape, v.shape, None if bias is None else bias.shape):
            return None
        perm = (*range(kt.rank - 2), kt.rank - 1, kt.rank - 2)
        k = b.emit("transpose", kt, perm=perm)
        args = [q, k, v] + ([bias] if bias is not None else [])
        return b.emit("attention", *args, scale=scale)

    return build


RULES = [
    Rule(P.op("matmul", P.op("softmax", masked, where=_last_axis), P.any("v")), _build(s_kind, m_kind))
    for scaled, s_kind in SCALED
    for masked, m_kind in _masked(scaled)
]


@register("fuse-attention", "rewrite softmax(q @ k^T * scale + mask) @ v as one attention op")
def fuse_attention(graph: Graph) -> bool:
    changed = rewrite(graph, HOIST)
    return rewrite(graph, RULES) or changed
