"""Fuse conv2d/dense with the residual add and the activation after them into one composite op."""

from __future__ import annotations

from ember.ir.graph import Graph
from ember.ir.ops.fused import ACTIVATIONS, activation_of
from ember.ir.ops.shapes import broadcast
from ember.passes.manager import register
from ember.passes.pattern import P, Rule, rewrite

FUSED = {"conv2d": "fused_conv2d", "dense": "fused_dense", "fused_conv2d": "fused_conv2d", "fused_dense": "fused_dense"}
UNARY_OPS = tuple(dict.fromkeys(op for op, _ in ACTIVATIONS.values()))


def _plain(node) -> bool:
    return node.op in ("conv2d", "dense") or node.attrs["activation"] == "none"


def _no_residual(node) -> bool:
    return node.op in ("conv2d", "dense") or (len(node.inputs) < 4 or node.inputs[3] is None)


LAYER = P.op(tuple(FUSED), P.any("x"), P.any("w"), P.opt(P.any("b")), P.opt(P.any("z")), name="layer", where=_plain)


def _operands(m) -> list:
    ops = [m["x"], m["w"], m["b"], m["z"]]
    while ops[-1] is None:
        ops.pop()
    return ops


def _attrs(layer, **extra) -> dict:
    attrs = {k: v for k, v in layer.attrs.items() if k not in ("activation", "act_params")}
    return attrs | extra


def _residual(m, b):
    layer, z = m["layer"], m["r"]
    out = layer.output
    if not _no_residual(layer) or z.dtype != out.dtype or broadcast(out.shape, z.shape) != out.shape:
        return None
    ops = [m["x"], m["w"], m["b"], z]
    return b.emit(FUSED[layer.op], *ops, **_attrs(layer, activation="none"))


def _activation(m, b):
    act = activation_of(m["act"])
    if act is None:
        return None
    return b.emit(FUSED[m["layer"].op], *_operands(m), **_attrs(m["layer"], activation=act[0], act_params=act[1]))


RULES = [
    Rule(P.op("add", LAYER, P.any("r"), commute=True), _residual),
    Rule(P.op(UNARY_OPS, LAYER, name="act"), _activation),
]


@register("fuse-activation", "fuse conv2d/dense with a following residual add and activation into one op")
def fuse_activation(graph: Graph) -> bool:
    return rewrite(graph, RULES)
