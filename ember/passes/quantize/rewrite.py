"""Rewrite float conv/dense layers into quantize -> qconv2d/qdense -> dequantize from calibrated ranges, then
drop dequantize -> quantize pairs with equal parameters so consecutive integer layers chain in int8."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import get_schema
from ember.ir.ops.fused import activation_op
from ember.ir.ops.quant import I32_RANGE, QRANGE
from ember.passes.quantize.scheme import (
    QParams,
    Scheme,
    activation_qparams,
    qadd_attrs,
    quantize_bias,
    quantize_weights,
    requant_params,
    weight_scales,
)

LAYERS = {"conv2d": "qconv2d", "fused_conv2d": "qconv2d", "dense": "qdense", "fused_dense": "qdense"}
BASE = {"fused_conv2d": "conv2d", "fused_dense": "dense"}
PRE = "#pre"  # range key suffix: a layer's conv/dense + bias, before an epilogue that stays float


@dataclass
class Layer:
    """A quantized layer: the node it replaced, where its int8 (or float epilogue) result is, and its weights."""

    name: str
    op: str
    probe: Value
    probe_qparams: QParams | None
    fp32_output: str
    float_epilogue: list[str] = field(default_factory=list)


def candidates(graph: Graph, skip: Sequence[str] = ()) -> list[Node]:
    """Layers with constant weights and a float input, minus those named (by node name or op) in `skip`."""
    out = []
    for node in graph.nodes:
        if node.op not in LAYERS or node.name in skip or node.op in skip:
            continue
        x, w = node.inputs[0], node.inputs[1]
        b = node.inputs[2] if len(node.inputs) > 2 else None
        if x.dtype == "f32" and w.is_const and (b is None or b.is_const) and x.rank >= 2:
            out.append(node)
    return out


def _activation(node: Node) -> tuple[str, tuple]:
    return node.attrs.get("activation", "none"), node.attrs.get("act_params", ())


def folds_epilogue(node: Node) -> bool:
    """Whether the layer's residual and activation fit in out_min/out_max (none, relu, clip; no residual)."""
    has_residual = len(node.inputs) > 3 and node.inputs[3] is not None
    return not has_residual and _activation(node)[0] in ("none", "relu", "clip")


def adds_in_int8(node: Node) -> bool:
    """Whether the layer's residual add runs as a qadd after it: a float residual of the output's shape, and an
    activation that fits qadd's out_min/out_max."""
    z = node.inputs[3] if len(node.inputs) > 3 else None
    return (
        z is not None
        and z.dtype == "f32"
        and tuple(z.shape) == tuple(node.output.shape)
        and _activation(node)[0] in ("none", "relu", "clip")
    )


def int8_result(node: Node) -> bool:
    """Whether the quantized layer's result is an integer tensor (its epilogue folded, or added in qadd)."""
    return folds_epilogue(node) or adds_in_int8(node)


def taps_for(layers: Sequence[Node]):
    """The calibration taps: each layer's input, its output, its pre-epilogue value when that is not the output,
    and the residual that a qadd quantizes."""
    by_name = {n.name: n for n in layers}

    def taps(node: Node, ins: list, outs: list) -> dict[str, np.ndarray]:
        if node.name not in by_name:
            return {}
        found = {node.inputs[0].name: ins[0], node.output.name: outs[0]}
        if not folds_epilogue(node):
            found[node.name + PRE] = _base_output(node, ins)
        if adds_in_int8(node):
            found[node.inputs[3].name] = ins[3]
        return found

    return taps


def _base_output(node: Node, ins: list) -> np.ndarray:
    base = BASE.get(node.op, node.op)
    schema = get_schema(base)
    attrs = {k: v for k, v in node.attrs.items() if k in schema.attrs}
    return schema.evaluate(ins[:3], attrs)[0]


def _channel_axis(node: Node) -> int:
    return 3 if node.op in ("conv2d", "fused_conv2d") and node.attrs["layout"] == "NHWC" else 0


def _clamp(node: Node, out: QParams) -> tuple[int, int]:
    activation, params = _activation(node)
    if activation == "relu":
        return max(out.qmin, out.zero_point), out.qmax
    if activation == "clip":
        return out.quantized(params[0]), out.quantized(params[1])
    return out.qmin, out.qmax


def quantize_layer(
    graph: Graph,
    node: Node,
    x_q: Value,
    x_params: QParams,
    out_params: QParams,
    scheme: Scheme,
    per_channel: bool,
    residual: tuple[Value, QParams, dict] | None = None,
) -> tuple[Value, Value]:
    """Emit qconv2d/qdense (and the float epilogue it cannot hold) before `node`; returns (int8 result, the value
    that replaces the node's output). With `residual` (the residual quantized, the output's parameters and the
    qadd's attributes) the residual add and activation run in a qadd."""
    x, w, b = (node.inputs + [None, None])[:3]
    axis = _channel_axis(node)
    w_scales = weight_scales(w.const, axis, per_channel, scheme.weight_max)
    wq = graph.add_constant(quantize_weights(w.const, w_scales, axis, scheme.weight_max), f"{w.name}.int8")
    args = [x_q, wq]
    if b is not None:
        args.append(graph.add_constant(quantize_bias(b.const, x_params.scale, w_scales), f"{b.name}.int32"))
    multiplier, shift = requant_params(x_params.scale, w_scales, out_params.scale)
    folded = folds_epilogue(node)
    out_min, out_max = _clamp(node, out_params) if folded else (out_params.qmin, out_params.qmax)
    attrs = {k: v for k, v in node.attrs.items() if k in get_schema(BASE.get(node.op, node.op)).attrs}
    attrs.update(x_zero_point=x_params.zero_point, multiplier=multiplier, shift=shift, out_min=out_min)
    attrs.update(out_zero_point=out_params.zero_point, out_dtype=out_params.dtype, out_max=out_max)
    q = graph.add_node(LAYERS[node.op], args, attrs, name=f"{node.name}.int8", before=node).output
    if residual is not None:
        z_q, out_params, add = residual
        q = graph.add_node("qadd", [q, z_q], add, name=f"{node.name}.residual.int8", before=node).output
        folded = True
    y = _dequantize(graph, q, out_params, node, f"{node.name}.dequantize")
    if not folded:
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            y = graph.add_node("add", [y, node.inputs[3]], name=f"{node.name}.residual", before=node).output
        activation, params = _activation(node)
        if activation != "none":
            unary, act_attrs = activation_op(activation, params)
            y = graph.add_node(unary, [y], act_attrs, name=f"{node.name}.{activation}", before=node).output
    return q, y


def _dequantize(graph: Graph, q: Value, p: QParams, before: Node, name: str) -> Value:
    attrs = {"scale": (p.scale,), "zero_point": (p.zero_point,)}
    return graph.add_node("dequantize", [q], attrs, name=name, before=before).output


def _input_key(x: Value, int8_out: set[int]) -> str:
    """The range a layer's input is quantized with: through data movement and max pooling back to an integer
    layer's output, that layer's (so the two chain in int8), else the input's own."""
    v = x
    while v.producer is not None and v.producer.op in INT8_SAFE and id(v) not in int8_out:
        v = v.producer.inputs[0]
    return v.name if id(v) in int8_out else x.name


def quantize_layers(
    graph: Graph,
    ranges: Mapping[str, tuple[float, float]],
    scheme: Scheme,
    per_channel: bool = True,
    skip: Sequence[str] = (),
) -> list[Layer]:
    """Replace each candidate layer by its integer form; returns what became of each."""
    inputs: dict[int, Value] = {}
    done = []
    layers = candidates(graph, skip)
    int8_out = {id(n.output) for n in layers if int8_result(n)}
    plan = [
        (
            node,
            _input_key(node.inputs[0], int8_out),
            node.output.name if folds_epilogue(node) else node.name + PRE,
            _input_key(node.inputs[3], int8_out) if adds_in_int8(node) else None,
        )
        for node in layers
    ]

    def quantized(x: Value, params: QParams, before: Node) -> Value:
        if id(x) not in inputs:
            attrs = {"scale": params.scale, "zero_point": params.zero_point, "dtype": params.dtype}
            inputs[id(x)] = graph.add_node("quantize", [x], attrs, name=f"{x.name}.quantize", before=before).output
        return inputs[id(x)]

    for node, x_key, out_key, z_key in plan:
        x_params = activation_qparams(*ranges[x_key], scheme.activation)
        out_params = activation_qparams(*ranges[out_key], scheme.activation)
        residual = None
        if z_key is not None:
            z_params = activation_qparams(*ranges[z_key], scheme.activation)
            y_params = activation_qparams(*ranges[node.output.name], scheme.activation)
            add = qadd_attrs(out_params, z_params, y_params, _clamp(node, y_params))
            if add is not None:
                residual = (quantized(node.inputs[3], z_params, node), y_params, add)
        x_q = quantized(node.inputs[0], x_params, node)
        q, y = quantize_layer(graph, node, x_q, x_params, out_params, scheme, per_channel, residual)
        layer = Layer(node.name, node.op, q, residual[1] if residual else out_params, node.output.name)
        if not folds_epilogue(node) and residual is None:
            layer.probe, layer.probe_qparams = y, None
            layer.float_epilogue = ["residual"] if len(node.inputs) > 3 and node.inputs[3] is not None else []
            layer.float_epilogue += [a for a in [_activation(node)[0]] if a != "none"]
        done.append(layer)
        graph.replace_all_uses(node.output, y)
        graph.remove_node(node)
    graph.drop_unused_constants()
    return done


def _same_params(d: Node, q: Node) -> bool:
    s, z = d.attrs["scale"], d.attrs["zero_point"]
    a = q.attrs
    return len(s) == 1 and (s[0], z[0], d.inputs[0].dtype) == (a["scale"], a["zero_point"], a["dtype"])


def remove_requantize_pairs(graph: Graph) -> bool:
    """dequantize -> quantize with equal parameters is the identity on the int8 value: read that directly."""
    changed = False
    for node in list(graph.nodes):
        if node.op != "quantize" or node.graph is None:
            continue
        d = node.inputs[0].producer
        if (
            d is None
            or d.op != "dequantize"
            or not _same_params(d, node)
            or not graph.can_replace(node.output, d.inputs[0])
        ):
            continue
        graph.replace_all_uses(node.output, d.inputs[0])
        graph.remove_node(node)
        if not d.output.uses and not graph.is_output(d.output):
            graph.remove_node(d)
        changed = True
    return changed


INT8_SAFE = ("transpose", "reshape", "flatten", "squeeze", "unsqueeze", "max_pool2d")


def _int8_safe(node: Node) -> bool:
    """Ops that commute with a per-tensor dequantize: data movement and max pooling (padding with the dtype's
    minimum)."""
    d = node.inputs[0].producer if node.inputs and node.inputs[0] is not None else None
    return node.op in INT8_SAFE and d is not None and d.op == "dequantize" and len(d.attrs["scale"]) == 1


def sink_dequantize(graph: Graph) -> bool:
    """dequantize -> transpose/reshape/max_pool2d becomes the op on the integers, then dequantize, so that
    quantized layers around such ops chain in int8 once the dequantize -> quantize pairs go."""
    changed = False
    for node in list(graph.nodes):
        if not _int8_safe(node):
            continue
        d = node.inputs[0].producer
        moved = graph.add_node(
            node.op, [d.inputs[0], *node.inputs[1:]], dict(node.attrs), f"{node.name}.int8", before=node
        )
        y = graph.add_node("dequantize", [moved.output], dict(d.attrs), f"{node.name}.dequantize", before=node).output
        graph.replace_all_uses(node.output, y)
        graph.remove_node(node)
        if not d.output.uses and not graph.is_output(d.output):
            graph.remove_node(d)
        changed = True
    return changed


def _float_clamp(layer: Node) -> tuple[int, int] | None:
    """The int32 clip on the sum that keeps an integer layer's clamp once its output is float: 0 for a relu (or a
    range starting at zero); None for a bound inside the range (relu6), which has no exact int32 form."""
    a = layer.attrs
    qmin, qmax = QRANGE[a["out_dtype"]]
    if a["out_max"] != qmax or a["out_min"] not in (qmin, a["out_zero_point"]):
        return None
    return (0 if a["out_min"] == a["out_zero_point"] else I32_RANGE[0]), I32_RANGE[1]


def fold_output_dequantize(graph: Graph, layers: Sequence[Layer] = ()) -> bool:
    """qconv2d/qdense -> per-tensor dequantize, the layer's only use, becomes the layer with an f32 output: one
    kernel fewer, and the result is not rounded to 8 bits nor clipped to its calibrated range. `layers` whose
    result that was have it probed in float from then on."""
    by_probe = {id(layer.probe): layer for layer in layers}
    changed = False
    for node in list(graph.nodes):
        q = node.inputs[0].producer if node.op == "dequantize" else None
        if q is None or q.op not in ("qconv2d", "qdense") or q.attrs["out_dtype"] not in QRANGE:
            continue
        clamp = _float_clamp(q)
        if len(node.attrs["scale"]) != 1 or clamp is None:
            continue
        if len(q.output.uses) != 1 or graph.is_output(q.output):
            continue
        a = q.attrs
        reals = [m * 2.0**-s for m, s in zip(a["multiplier"], a["shift"])]  # x_scale * w_scale / out_scale
        multiplier, shift = requant_params(node.attrs["scale"][0], reals, 1.0)  # an f32 output's scale is 1
        attrs = {**a, "multiplier": multiplier, "shift": shift}
        attrs.update(out_zero_point=0, out_dtype="f32", out_min=clamp[0], out_max=clamp[1])
        folded = graph.add_node(q.op, list(q.inputs), attrs, name=node.name, before=node)
        graph.replace_all_uses(node.output, folded.output)
        if id(q.output) in by_probe:
            by_probe[id(q.output)].probe, by_probe[id(q.output)].probe_qparams = folded.output, None
        graph.remove_node(node)
        graph.remove_node(q)
        changed = True
    return changed
