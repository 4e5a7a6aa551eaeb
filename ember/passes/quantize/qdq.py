"""Pre-quantized (QDQ) models: DequantizeLinear(x), DequantizeLinear(w) -> Conv/Gemm/MatMul [-> bias, relu/clip]
-> QuantizeLinear becomes the same qconv2d/qdense that post-training quantization makes, with the model's scales;
DequantizeLinear(a), DequantizeLinear(b) -> Add [-> relu/clip] -> QuantizeLinear (a residual add) becomes qadd."""

from __future__ import annotations

import numpy as np

from ember.ir.graph import Graph, Node, Value
from ember.passes.dce import eliminate_dead_code
from ember.passes.quantize.rewrite import remove_requantize_pairs, sink_dequantize
from ember.passes.quantize.scheme import (
    QParams,
    Scheme,
    qadd_attrs,
    quantize_bias,
    quantize_weights,
    requant_params,
    weight_scales,
)

LAYER_OPS = ("conv2d", "dense", "matmul")


def _qparams(node: Node) -> QParams:
    """Per-tensor parameters of a quantize or dequantize node."""
    a = node.attrs
    if node.op == "quantize":
        return QParams(a["scale"], a["zero_point"], a["dtype"])
    return QParams(a["scale"][0], a["zero_point"][0], node.inputs[0].dtype)


def _weight(v: Value, out_axis: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(float weights, int8 weights with their per-channel scales when the model states them) of a constant,
    or of dequantize(constant int8) seen through transposes; None if the weight is not constant."""
    perm = None
    node = v.producer
    if node is not None and node.op == "unsqueeze":  # a 1-D conv's weight, lifted to a unit height
        found = _weight(node.inputs[0], out_axis)
        axes = node.attrs["axes"]
        return None if found is None else (np.expand_dims(found[0], axes), _expand(found[1], axes))
    if node is not None and node.op == "transpose":
        perm, v, node = node.attrs["perm"], node.inputs[0], node.inputs[0].producer
    if v.is_const:
        w = v.const if perm is None else v.const.transpose(perm)
        return w.astype(np.float32), None
    if node is None or node.op != "dequantize" or not node.inputs[0].is_const or node.inputs[0].dtype != "i8":
        return None
    q, a = node.inputs[0].const, node.attrs
    if any(z != 0 for z in a["zero_point"]):
        return None
    axis = a["axis"] % q.ndim
    scales = np.asarray(a["scale"], np.float32)
    if perm is not None:
        q, axis = q.transpose(perm), list(perm).index(axis)
    if scales.size > 1 and axis != out_axis:
        return None
    w = q.astype(np.float32) * (
        scales.reshape([-1 if i == axis else 1 for i in range(q.ndim)]) if scales.size > 1 else scales
    )
    return w, (q, np.broadcast_to(scales, (q.shape[out_axis],)).astype(np.float32))


def _expand(exact, axes):
    return None if exact is None else (np.expand_dims(exact[0], axes), exact[1])


def _lifted_operand(v: Value) -> tuple[Value, list[int] | None]:
    """The operand a 1-D layer's unsqueeze to a unit height took, and its axes; else (v, None)."""
    node = v.producer
    return (node.inputs[0], node.attrs["axes"]) if node is not None and node.op == "unsqueeze" else (v, None)


def _bias(v: Value | None) -> tuple[bool, np.ndarray | None]:
    """(whether the bias is usable, its float values): absent, a constant, or dequantize(constant)."""
    if v is None:
        return True, None
    if v.is_const:
        return True, v.const.astype(np.float64).reshape(-1)
    node = v.producer
    if node is not None and node.op == "dequantize" and node.inputs[0].is_const:
        q, a = node.inputs[0].const.astype(np.float64), node.attrs
        scale = np.asarray(a["scale"], np.float64)
        return True, ((q - np.asarray(a["zero_point"], np.float64)) * scale).reshape(-1)
    return False, None


def _epilogue(graph: Graph, y: Value) -> tuple[list[Node], Node | None]:
    """The single-use chain after a layer: [add bias (matmul)], [relu | clip], then a per-tensor quantize."""
    chain = []
    while len(y.uses) == 1 and not graph.is_output(y):
        user = y.users[0]
        if user.op == "quantize":
            return chain, user
        if user.op not in ("add", "relu", "clip", "squeeze") or (user.op == "add" and chain):
            break  # a bias add comes first, if at all; a squeeze drops a 1-D layer's unit height
        chain.append(user)
        y = user.output
    return chain, None


def _clamp(acts: list[Node], out: QParams) -> tuple[int, int]:
    lo, hi = out.qmin, out.qmax
    for n in acts:
        if n.op == "relu":
            lo = max(lo, out.zero_point)
        else:
            lo, hi = max(lo, out.quantized(n.attrs["min"])), min(hi, out.quantized(n.attrs["max"]))
    return lo, hi


def _integer_weights(w: np.ndarray, exact, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """The model's int8 weights and scales when they fit the target's bound, else the float weights requantized
    per output channel (axis 0) to it."""
    if exact is not None and int(np.abs(exact[0].astype(np.int32)).max()) <= scheme.weight_max:
        return exact
    scales = weight_scales(w, 0, True, scheme.weight_max)
    return quantize_weights(w, scales, 0, scheme.weight_max), scales


def _fuse_one(graph: Graph, node: Node, scheme: Scheme) -> bool:
    x, lifted = _lifted_operand(node.inputs[0]) if node.op == "conv2d" else (node.inputs[0], None)
    dx = x.producer
    if dx is None or dx.op != "dequantize" or len(dx.attrs["scale"]) != 1 or dx.inputs[0].dtype not in ("i8", "u8"):
        return False
    is_conv = node.op == "conv2d"
    if node.op == "matmul" and (node.inputs[1].rank != 2 or node.inputs[0].rank < 2):
        return False
    found = _weight(node.inputs[1], 0 if node.op != "matmul" else 1)
    if found is None:
        return False
    w, exact = found
    chain, q = _epilogue(graph, node.output)
    bias_value = node.inputs[2] if len(node.inputs) > 2 else None
    adds = [n for n in chain if n.op == "add"]
    squeezes = [n.attrs["axes"] for n in chain if n.op == "squeeze"]
    if squeezes and (lifted is None or squeezes != [lifted]):
        return False
    if adds:
        if bias_value is not None or node.op == "conv2d":
            return False
        bias_value = adds[0].inputs[1] if adds[0].inputs[0] is node.output else adds[0].inputs[0]
    usable, b = _bias(bias_value)
    if q is None or not usable:
        return False
    if node.op == "matmul":
        w = w.T
        exact = None if exact is None else (exact[0].T, exact[1])
    if b is not None and b.size != w.shape[0]:
        return False
    x_params, out_params = _qparams(dx), _qparams(q)
    wq, w_scales = _integer_weights(w, exact, scheme)
    xq = dx.inputs[0]
    if lifted is not None:
        xq = graph.add_node("unsqueeze", [xq], {"axes": lifted}, name=f"{node.name}.x.int8", before=q).output
    args = [xq, graph.add_constant(np.ascontiguousarray(wq, np.int8), f"{node.name}.weight.int8")]
    if b is not None:
        args.append(graph.add_constant(quantize_bias(b, x_params.scale, w_scales), f"{node.name}.bias.int32"))
    multiplier, shift = requant_params(x_params.scale, w_scales, out_params.scale)
    out_min, out_max = _clamp([n for n in chain if n.op in ("relu", "clip")], out_params)
    attrs = {k: node.attrs[k] for k in ("strides", "pads", "dilations", "group", "layout")} if is_conv else {}
    attrs.update(x_zero_point=x_params.zero_point, multiplier=multiplier, shift=shift, out_min=out_min)
    attrs.update(out_zero_point=out_params.zero_point, out_dtype=out_params.dtype, out_max=out_max)
    op = "qconv2d" if is_conv else "qdense"
    y = graph.add_node(op, args, attrs, name=f"{node.name}.int8", before=q).output
    if squeezes:
        y = graph.add_node("squeeze", [y], {"axes": squeezes[0]}, name=f"{node.name}.int8.squeeze", before=q).output
    graph.replace_all_uses(q.output, y)
    return True


def _per_tensor_dequantize(v: Value) -> Node | None:
    d = v.producer
    if d is None or d.op != "dequantize" or len(d.attrs["scale"]) != 1 or d.inputs[0].dtype not in ("i8", "u8"):
        return None
    return d


def _fuse_add(graph: Graph, node: Node) -> bool:
    """dequantize(a) + dequantize(b) [-> relu | clip] -> quantize, per tensor and without broadcasting, into qadd
    (the activation in out_min/out_max); it stays float when the scales' ratios do not fit qadd's multipliers."""
    da, db = (_per_tensor_dequantize(v) for v in node.inputs)
    if da is None or db is None or not all(tuple(v.shape) == tuple(node.output.shape) for v in node.inputs):
        return False
    chain, q = _epilogue(graph, node.output)
    if q is None or any(n.op == "add" for n in chain):
        return False
    out = _qparams(q)
    attrs = qadd_attrs(_qparams(da), _qparams(db), out, _clamp(chain, out))
    if attrs is None:
        return False
    y = graph.add_node("qadd", [da.inputs[0], db.inputs[0]], attrs, name=f"{node.name}.int8", before=q).output
    graph.replace_all_uses(q.output, y)
    return True


def fuse_qdq(graph: Graph, scheme: Scheme) -> bool:
    """Fuse every QDQ-wrapped conv/dense/matmul with constant weights into qconv2d/qdense and every QDQ-wrapped
    residual add into qadd (what the pattern does not fit stays float between its quantize/dequantize nodes), then
    let pooling and data movement run on the integers between them."""
    changed = False
    for node in [n for n in graph.nodes if n.op in LAYER_OPS]:
        changed |= _fuse_one(graph, node, scheme)
    for node in [n for n in graph.nodes if n.op == "add"]:
        changed |= _fuse_add(graph, node)
    if changed:
        sink_dequantize(graph)
        remove_requantize_pairs(graph)
        eliminate_dead_code(graph)
    return changed
