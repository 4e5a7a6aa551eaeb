"""Composite ops that fusion passes build: a layer with its bias, residual and activation, and attention.

Each is declared with a `decompose` into primitive ops, so exporters and readers never need to know
about composites; backends lower them whole, as one kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.graph import Node, Value
from ember.ir.ops.nn import conv2d, dense
from ember.ir.ops.registry import Attr, OpSchema, decomposition, get_schema, op, reference
from ember.ir.ops.shapes import broadcast, fmt

# activation name -> (unary op, its attributes as a function of act_params)
ACTIVATIONS: dict[str, tuple[str, Callable[[tuple], dict]]] = {
    "relu": ("relu", lambda p: {}),
    "clip": ("clip", lambda p: {"min": p[0], "max": p[1]}),
    "sigmoid": ("sigmoid", lambda p: {}),
    "tanh": ("tanh", lambda p: {}),
    "silu": ("silu", lambda p: {}),
    "hard_swish": ("hard_swish", lambda p: {}),
    "hard_sigmoid": ("hard_sigmoid", lambda p: {"alpha": p[0], "beta": p[1]}),
    "leaky_relu": ("leaky_relu", lambda p: {"alpha": p[0]}),
    "gelu": ("gelu", lambda p: {"approximate": "none"}),
    "gelu_tanh": ("gelu", lambda p: {"approximate": "tanh"}),
}
_PARAMS = {"clip": 2, "hard_sigmoid": 2, "leaky_relu": 1}


def activation_of(node: Node) -> tuple[str, tuple[float, ...]] | None:
    """(activation, act_params) for a unary node that can be fused into a layer, else None."""
    a = node.attrs
    if node.op == "gelu":
        return ("gelu_tanh" if a["approximate"] == "tanh" else "gelu"), ()
    if node.op == "clip":
        return "clip", (a["min"], a["max"])
    if node.op == "hard_sigmoid":
        return "hard_sigmoid", (a["alpha"], a["beta"])
    if node.op == "leaky_relu":
        return "leaky_relu", (a["alpha"],)
    return (node.op, ()) if node.op in ACTIVATIONS else None


def activation_op(activation: str, params: tuple) -> tuple[str, dict]:
    """The unary op and attributes an (activation, act_params) pair stands for."""
    if activation not in ACTIVATIONS:
        raise EmberError(f"unknown activation '{activation}'", hint=f"known: none, {', '.join(ACTIVATIONS)}")
    if len(params) != _PARAMS.get(activation, 0):
        raise EmberError(f"activation '{activation}' takes {_PARAMS.get(activation, 0)} act_params, got {len(params)}")
    unary, attrs = ACTIVATIONS[activation]
    return unary, get_schema(unary).complete_attrs(attrs(params))


def _check_act(a: dict) -> None:
    if a["activation"] != "none":
        activation_op(a["activation"], a["act_params"])


def _layer_infer(base: OpSchema):
    def infer(ins, a):
        x, w, b, z = (ins + [None] * 4)[:4]
        base_attrs = {k: v for k, v in a.items() if k not in ("activation", "act_params")}
        (shape, dtype) = base.infer_types([x, w, b], base_attrs)[0]
        if z is not None and broadcast(shape, z.shape) != tuple(shape):
            raise EmberError(f"residual {fmt(z.shape)} must broadcast to the output {fmt(shape)}")
        _check_act(a)
        return shape, dtype

    return infer


def _layer_reference(base: OpSchema):
    def ref(x, w, b, z, a):
        base_attrs = {k: v for k, v in a.items() if k not in ("activation", "act_params")}
        y = base.evaluate([x, w, b], base_attrs)[0]
        if z is not None:
            y = (y + z).astype(y.dtype)
        if a["activation"] == "none":
            return y
        unary, attrs = activation_op(a["activation"], a["act_params"])
        return get_schema(unary).evaluate([y], attrs)[0]

    return ref


_ACT_ATTRS = dict(activation=Attr("str", "none"), act_params=Attr("floats", ()))

fused_conv2d = op(
    "fused_conv2d",
    "x w b? z?",
    "conv2d, plus bias, plus residual z, then an activation: one kernel",
    tags=("conv", "composite"),
    **conv2d.attrs,
    **_ACT_ATTRS,
)(_layer_infer(conv2d))
fused_dense = op(
    "fused_dense",
    "x w b? z?",
    "dense, plus bias, plus residual z, then an activation: one kernel",
    tags=("matmul", "composite"),
    **_ACT_ATTRS,
)(_layer_infer(dense))
reference(fused_conv2d)(_layer_reference(conv2d))
reference(fused_dense)(_layer_reference(dense))


def _decompose_layer(base: str):
    def expand(node: Node, emit) -> Value:
        x, w, b, z = (node.inputs + [None] * 4)[:4]
        attrs = {k: v for k, v in node.attrs.items() if k not in ("activation", "act_params")}
        y = emit(base, x, w, b, **attrs)
        if z is not None:
            y = emit("add", y, z)
        if node.attrs["activation"] != "none":
            unary, act_attrs = activation_op(node.attrs["activation"], node.attrs["act_params"])
            y = emit(unary, y, **act_attrs)
        return y

    return expand


decomposition(fused_conv2d)(_decompose_layer("conv2d"))
decomposition(fused_dense)(_decompose_layer("dense"))


@op(
    "attention",
    "q k v bias?",
    "softmax(q @ k^T * scale + bias) @ v over the last two axes (q [..., Sq, D], k [..., Sk, D], v [..., Sk, Dv])",
    tags=("composite",),
    scale=Attr("float"),
)
def attention(ins, a):
    q, k, v, bias = (ins + [None])[:4]
    if min(q.rank, k.rank, v.rank) < 2 or not q.rank == k.rank == v.rank:
        raise EmberError(f"q {fmt(q.shape)}, k {fmt(k.shape)} and v {fmt(v.shape)} must share a rank >= 2")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise EmberError(f"q {fmt(q.shape)}, k {fmt(k.shape)} and v {fmt(v.shape)} disagree on D or Sk")
    lead = broadcast(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if lead != tuple(q.shape[:-2]):
        raise EmberError(f"k {fmt(k.shape)} and v {fmt(v.shape)} must not broadcast q {fmt(q.shape)}")
    scores = (*lead, q.shape[-2], k.shape[-2])
    if bias is not None and broadcast(scores, bias.shape) != scores:
        raise EmberError(f"bias {fmt(bias.shape)} must broadcast to the scores {fmt(scores)}")
    return (*lead, q.shape[-2], v.shape[-1]), q.dtype


@reference(attention)
def _attention(q, k, v, bias, a):
    s = np.matmul(q.astype(np.float64), np.swapaxes(k, -1, -2).astype(np.float64)) * a["scale"]
    if bias is not None:
        s = s + bias
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return np.matmul(e / e.sum(axis=-1, keepdims=True), v.astype(np.float64)).astype(q.dtype)


@decomposition(attention)
def _decompose_attention(node: Node, emit) -> Value:
    q, k, v, bias = (node.inputs + [None])[:4]
    perm = (*range(k.rank - 2), k.rank - 1, k.rank - 2)
    s = emit("matmul", q, emit("transpose", k, perm=perm))
    s = emit("mul", s, np.asarray(node.attrs["scale"], dtype=dtypes.to_numpy(q.dtype)))
    if bias is not None:
        s = emit("add", s, bias)
    return emit("matmul", emit("softmax", s, axis=-1), v)
