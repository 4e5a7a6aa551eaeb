"""Convert convolutions and 2-D pools to NHWC (the layout ARM CPU kernels want), then sink the transposes
that this puts around them through layout-agnostic ops until consecutive ones cancel."""

from __future__ import annotations

import numpy as np

from ember.ir.graph import Graph, Node
from ember.ir.ops.nn import OIHW_TO_HWIO, TO_NCHW, TO_NHWC
from ember.passes.canonicalize import BINARY, SAME_SHAPE_BINARY, UNARY, canonicalize
from ember.passes.manager import register
from ember.passes.pattern import P, Rule, rewrite


def _nchw_4d(node: Node) -> bool:
    return node.attrs["layout"] == "NCHW" and node.inputs[0].rank == 4


def _transpose(b, x, perm: tuple[int, ...], suffix: str):
    return b.graph.add_node("transpose", [x], {"perm": perm}, f"{b.root.name}.{suffix}", before=b.root).output


def _convert(m, b):
    node = m["n"]
    x = _transpose(b, m["x"], TO_NHWC, "nhwc")
    args = [x]
    if node.op in ("conv2d", "fused_conv2d", "qconv2d"):
        w = m["w"]
        args.append(
            b.const(np.ascontiguousarray(w.const.transpose(OIHW_TO_HWIO)), name=f"{w.name}.hwio")
            if w.is_const
            else b.emit("transpose", w, perm=OIHW_TO_HWIO)
        )
        args.append(m["b"])
        if m["z"] is not None:
            args.append(_transpose(b, m["z"], TO_NHWC, "z_nhwc"))
        while args[-1] is None:
            args.pop()
    y = b.emit(node.op, *args, **{**node.attrs, "layout": "NHWC"})
    return b.emit("transpose", y, perm=TO_NCHW)


CONVERT = [
    Rule(
        P.op(
            ("conv2d", "fused_conv2d", "qconv2d"),
            P.any("x"),
            P.any("w"),
            P.opt(P.any("b")),
            P.opt(P.any("z")),
            name="n",
            where=_nchw_4d,
        ),
        _convert,
    ),
    Rule(P.op(("max_pool2d", "avg_pool2d"), P.any("x"), name="n", where=_nchw_4d), _convert),
]


def _perm(m, name: str = "t") -> tuple[int, ...]:
    return m[name].attrs["perm"]


T = P.op("transpose", P.any("x"), name="t", shared=True)


def _sink_unary(m, b):
    node = m["u"]
    return b.emit("transpose", b.emit(node.op, m["x"], **node.attrs), perm=_perm(m))


def _sink_binary(m, b):
    if _perm(m, "t") != _perm(m, "t2") or m["x"].rank != m["y"].rank:
        return None
    return b.emit("transpose", b.emit(m["bin"].op, m["x"], m["y"], **m["bin"].attrs), perm=_perm(m))


def _sink_binary_const(const_first: bool):
    def build(m, b):
        perm, c = _perm(m), m["c"].const
        rank = len(perm)
        if c.ndim > rank or m["bin"].output.rank != rank:
            return None
        moved = b.const(np.ascontiguousarray(c.reshape((1,) * (rank - c.ndim) + c.shape).transpose(np.argsort(perm))))
        args = (moved, m["x"]) if const_first else (m["x"], moved)
        return b.emit("transpose", b.emit(m["bin"].op, *args), perm=perm)

    return build


def _sink_global_pool(m, b):
    if _perm(m) != TO_NCHW:
        return None
    op = "reduce_mean" if m["g"].op == "global_avg_pool" else "reduce_max"
    return b.emit("transpose", b.emit(op, m["x"], axes=(1, 2), keepdims=1), perm=TO_NCHW)


def _moves_only_ones(node: Node) -> bool:
    x, perm = node.inputs[0], node.attrs["perm"]
    kept = [p for p in perm if x.shape[p] != 1]
    return x.is_static and kept == sorted(kept)


def _as_reshape(m, b):
    shape = b.const(np.array(m["t"].output.shape, dtype=np.int64))
    return b.emit("reshape", m["x"], shape)


def _flattens_nchw(node: Node) -> bool:
    """reshape(transpose(x NHWC, TO_NCHW)) to [N, C*H*W], the flatten before a classifier's dense layer."""
    t = node.inputs[0].producer
    x = t.inputs[0] if t is not None and t.op == "transpose" and t.attrs["perm"] == TO_NCHW else None
    return x is not None and x.is_static and tuple(node.output.shape) == (x.shape[0], int(np.prod(x.shape[1:])))


def _dense_on_nhwc(m, b):
    """dense(flatten(transpose(x, TO_NCHW)), w) -> dense(flatten(x), w'): w's columns reordered to NHWC at compile
    time, so no transpose runs."""
    x, w = m["x"], m["w"]
    _, h, wd, c = x.shape
    order = np.arange(c * h * wd).reshape(c, h, wd).transpose(1, 2, 0).reshape(-1)  # NHWC position -> NCHW column
    moved = b.const(np.ascontiguousarray(w.const[:, order]), like=w, name=f"{w.name}.nhwc")
    flat = b.graph.add_node("reshape", [x, m["s"]], m["f"].attrs, m["f"].name, before=b.root).output
    args = [flat, moved, m["b"], m["z"]]
    while args[-1] is None:
        args.pop()
    return b.emit(m["d"].op, *args, **m["d"].attrs)


FLATTEN = P.op("reshape", P.op("transpose", P.any("x")), P.const("s"), name="f", where=_flattens_nchw)

SINK = [
    Rule(
        P.op(("dense", "fused_dense", "qdense"), FLATTEN, P.const("w"), P.opt(P.any("b")), P.opt(P.any("z")), name="d"),
        _dense_on_nhwc,
    ),
    Rule(P.op("transpose", P.any("x"), name="t", where=_moves_only_ones), _as_reshape),
    Rule(P.op(UNARY, T, name="u"), _sink_unary),
    Rule(P.op(SAME_SHAPE_BINARY, T, P.op("transpose", P.any("y"), name="t2", shared=True), name="bin"), _sink_binary),
    Rule(P.op(BINARY, T, P.const("c"), name="bin"), _sink_binary_const(False)),
    Rule(P.op(BINARY, P.const("c"), T, name="bin"), _sink_binary_const(True)),
    Rule(P.op(("global_avg_pool", "global_max_pool"), T, name="g"), _sink_global_pool),
]


def _sink_split(graph: Graph) -> bool:
    """split(transpose(x, p), axis) -> transpose(part, p) for each part of split(x, axis=p[axis])."""
    changed = False
    for node in list(graph.nodes):
        t = node.inputs[0].producer if node.graph is graph and node.op == "split" else None
        if t is None or t.op != "transpose":
            continue
        perm = t.attrs["perm"]
        axis = perm[node.attrs["axis"] % node.inputs[0].rank]
        inner = graph.add_node(
            "split", [t.inputs[0]], {**node.attrs, "axis": axis}, node.name, [o.name for o in node.outputs], node
        )
        for old, part in zip(node.outputs, inner.outputs):
            new = graph.add_node("transpose", [part], {"perm": perm}, old.name, before=node)
            graph.replace_all_uses(old, new.output)
        graph.remove_node(node)
        changed = True
    return changed


def _sink_concat(graph: Graph) -> bool:
    """concat(transpose(a, p), transpose(b, p), ...) -> transpose(concat(a, b, ..., axis=p[axis]), p)."""
    changed = False
    for node in list(graph.nodes):
        if node.graph is not graph or node.op != "concat":
            continue
        producers = [v.producer for v in node.inputs]
        if not all(p is not None and p.op == "transpose" for p in producers):
            continue
        perm = producers[0].attrs["perm"]
        if any(p.attrs["perm"] != perm for p in producers):
            continue
        axis = node.attrs["axis"] % node.output.rank
        inner = graph.add_node("concat", [p.inputs[0] for p in producers], {"axis": perm[axis]}, node.name, before=node)
        new = graph.add_node("transpose", [inner.output], {"perm": perm}, node.name, before=node)
        graph.replace_all_uses(node.output, new.output)
        graph.remove_node(node)
        changed = True
    return changed


@register("convert-to-nhwc", "run conv2d and pools in NHWC, sinking and cancelling the transposes around them")
def convert_to_nhwc(graph: Graph) -> bool:
    original = {n.name for n in graph.nodes} | {v.name for v in graph.values}
    if not rewrite(graph, CONVERT):
        return False
    for _ in range(len(graph.nodes)):
        moved = rewrite(graph, SINK)
        moved |= _sink_concat(graph)
        moved |= _sink_split(graph)
        moved |= canonicalize(graph)
        if not moved:
            break
    graph.reclaim_names(original)
    return True
