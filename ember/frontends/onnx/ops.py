"""ONNX op -> Ember op table. Each entry maps one ONNX node and returns its Ember outputs."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ember.errors import EmberError
from ember.frontends.onnx.importer import Importer
from ember.ir import dtypes
from ember.ir.graph import Value
from ember.ir.ops.shapes import norm_axis

ONNX_OPS: dict[str, Callable[[Importer, gs.Node], list]] = {}


def onnx_op(*names: str):
    def wrap(fn):
        for n in names:
            ONNX_OPS[n] = fn
        return fn

    return wrap


def op_key(node: gs.Node) -> str:
    """The node's key in ONNX_OPS: its op type, prefixed by its domain outside the default one
    ("com.microsoft.QLinearAdd")."""
    return node.op if node.domain in ("", "ai.onnx", None) else f"{node.domain}.{node.op}"


def _outs(n: gs.Node, k: int | None = None) -> list[str]:
    return [t.name for t in (n.outputs if k is None else n.outputs[:k])]


def _simple(ember_op: str, **fixed):
    """An ONNX op that maps 1:1 onto an Ember op, its attributes passed by the given renames."""

    def convert(m: Importer, n: gs.Node):
        attrs = {dst: n.attrs[src] for dst, src in fixed.items() if src in n.attrs}
        return m.emit(ember_op, m.ins(n), attrs, _outs(n))

    return convert


for _onnx, _ember in {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Exp": "exp",
    "Log": "log",
    "Sqrt": "sqrt",
    "Erf": "erf",
    "Neg": "neg",
    "Abs": "abs",
    "Reciprocal": "reciprocal",
    "Floor": "floor",
    "Ceil": "ceil",
    "Round": "round",
    "Sign": "sign",
    "Sin": "sin",
    "Cos": "cos",
    "Tan": "tan",
    "Atan": "atan",
    "Asin": "asin",
    "Acos": "acos",
    "Sinh": "sinh",
    "Cosh": "cosh",
    "Asinh": "asinh",
    "Acosh": "acosh",
    "Atanh": "atanh",
    "Not": "not",
    "IsNaN": "isnan",
    "BitwiseNot": "bitwise_not",
    "BitwiseAnd": "bitwise_and",
    "BitwiseOr": "bitwise_or",
    "BitwiseXor": "bitwise_xor",
    "Identity": "identity",
    "Softplus": "softplus",
    "HardSwish": "hard_swish",
    "Where": "where",
    "Sub": "sub",
    "Div": "div",
    "Equal": "equal",
    "Less": "less",
    "Greater": "greater",
    "LessOrEqual": "less_equal",
    "GreaterOrEqual": "greater_equal",
    "And": "and",
    "Or": "or",
    "Xor": "xor",
    "MatMul": "matmul",
    "GlobalAveragePool": "global_avg_pool",
    "GlobalMaxPool": "global_max_pool",
}.items():
    ONNX_OPS[_onnx] = _simple(_ember)
ONNX_OPS["Add"] = _simple("add")
ONNX_OPS["Mul"] = _simple("mul")
ONNX_OPS["HardSigmoid"] = _simple("hard_sigmoid", alpha="alpha", beta="beta")
ONNX_OPS["LeakyRelu"] = _simple("leaky_relu", alpha="alpha")
ONNX_OPS["Elu"] = _simple("elu", alpha="alpha")
ONNX_OPS["Gelu"] = _simple("gelu", approximate="approximate")
ONNX_OPS["LRN"] = _simple("lrn", size="size", alpha="alpha", beta="beta", bias="bias")
ONNX_OPS["Gather"] = _simple("gather", axis="axis")
ONNX_OPS["GatherElements"] = _simple("gather_elements", axis="axis")
ONNX_OPS["GatherND"] = _simple("gather_nd", batch_dims="batch_dims")
ONNX_OPS["ScatterElements"] = ONNX_OPS["Scatter"] = _simple("scatter_elements", axis="axis", reduction="reduction")
ONNX_OPS["ScatterND"] = _simple("scatter_nd", reduction="reduction")
ONNX_OPS["Flatten"] = _simple("flatten", axis="axis")
ONNX_OPS["Expand"] = _simple("expand")
ONNX_OPS["Tile"] = _simple("tile")
ONNX_OPS["Range"] = _simple("range")
ONNX_OPS["Shape"] = _simple("shape", start="start", end="end")
ONNX_OPS["Concat"] = _simple("concat", axis="axis")


@onnx_op("Pow")
def _pow(m, n):
    x, y = m.ins(n)
    if dtypes.is_float(y.dtype) and not dtypes.is_float(x.dtype):  # an integer base, a real exponent: as C++ does
        p = m.emit1("pow", [m.emit1("cast", [x], {"to": y.dtype}), y])
        return m.emit("cast", [p], {"to": x.dtype}, _outs(n))
    if y.dtype != x.dtype:
        y = m.emit1("cast", [y], {"to": x.dtype})
    return m.emit("pow", [x, y], {}, _outs(n))


@onnx_op("Max", "Min", "Sum", "Mean")
def _variadic(m, n):
    op = {"Max": "max", "Min": "min", "Sum": "add", "Mean": "add"}[n.op]
    vals = m.ins(n)
    acc = vals[0]
    for i, v in enumerate(vals[1:]):
        last = i == len(vals) - 2 and n.op != "Mean"
        acc = m.emit1(op, [acc, v], name=n.outputs[0].name if last else None)
    if n.op == "Mean":
        acc = m.emit1("div", [acc, m.scalar(len(vals), acc)], name=n.outputs[0].name)
    elif len(vals) == 1:
        acc = m.emit1("identity", [acc], name=n.outputs[0].name)
    return [acc]


@onnx_op("Mod")
def _mod(m, n):
    fmod = n.attrs.get("fmod", 0)
    if not fmod and dtypes.is_float(m.inp(n, 0).dtype):
        raise EmberError("Mod with fmod=0 on floats is undefined in ONNX")
    return m.emit("mod" if fmod else "floor_mod", m.ins(n), {}, _outs(n))


@onnx_op("Cast")
def _cast(m, n):
    to = dtypes.from_numpy(onnx.helper.tensor_dtype_to_np_dtype(n.attrs["to"]))
    return m.emit("cast", m.ins(n), {"to": to}, _outs(n))


@onnx_op("BitShift")
def _bit_shift(m, n):
    direction = n.attrs["direction"]
    direction = direction.decode() if isinstance(direction, bytes) else direction
    return m.emit("left_shift" if direction == "LEFT" else "right_shift", m.ins(n), {}, _outs(n))


@onnx_op("Einsum")
def _einsum(m, n):
    equation = n.attrs["equation"]
    equation = equation.decode() if isinstance(equation, bytes) else equation
    return m.emit("einsum", m.ins(n), {"equation": equation}, _outs(n))


@onnx_op("CastLike")
def _cast_like(m, n):
    return m.emit("cast", [m.inp(n, 0)], {"to": m.inp(n, 1).dtype}, _outs(n))


@onnx_op("Clip")
def _clip(m, n):
    if m.opset < 11:
        lo, hi = n.attrs.get("min", -math.inf), n.attrs.get("max", math.inf)
    else:
        lo_c, hi_c = m.const(n, 1, "Clip min"), m.const(n, 2, "Clip max")
        lo = -math.inf if lo_c is None else float(lo_c)
        hi = math.inf if hi_c is None else float(hi_c)
    return m.emit("clip", [m.inp(n, 0)], {"min": lo, "max": hi}, _outs(n))


@onnx_op("Dropout")
def _dropout(m, n):
    if len(n.outputs) > 1 and n.outputs[1].outputs:
        raise EmberError("the Dropout mask output is used; only inference-mode Dropout is supported")
    training = m.const(n, 2, "Dropout training_mode")
    if training is not None and bool(training):
        raise EmberError("training-mode Dropout is random; export the model in eval mode")
    return m.emit("identity", [m.inp(n, 0)], {}, _outs(n, 1))


@onnx_op("Constant")
def _constant(m, n):
    ((key, val),) = [(k, v) for k, v in n.attrs.items()]
    arr = np.asarray(val.values if isinstance(val, gs.Constant) else val)
    if key in ("value_float", "value_floats"):
        arr = arr.astype(np.float32)
    elif key in ("value_int", "value_ints"):
        arr = arr.astype(np.int64)
    return [m.graph.add_constant(arr, m._cname(n.outputs[0].name))]


@onnx_op("ConstantOfShape")
def _constant_of_shape(m, n):
    val = n.attrs.get("value")
    arr = np.zeros(1, np.float32) if val is None else np.asarray(val.values if isinstance(val, gs.Constant) else val)
    attrs = {"value": float(arr.reshape(-1)[0]), "dtype": dtypes.from_numpy(arr.dtype)}
    return m.emit("constant_of_shape", [m.inp(n, 0)], attrs, _outs(n))


def _auto_pads(at: dict, x, kernel, strides, dilations) -> list[int]:
    dims = len(kernel)
    pads = list(at.get("pads", [0] * 2 * dims))
    mode = at.get("auto_pad", "NOTSET")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode in ("NOTSET", "VALID"):
        return pads if mode == "NOTSET" else [0] * 2 * dims
    begin, end = [], []
    for i in range(dims):
        size = x.shape[2 + i]
        if not isinstance(size, int):
            raise EmberError(f"auto_pad={mode} needs a static spatial size", hint="pass --input-shape")
        out = -(-size // strides[i])
        total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end


# A 1-D layer's attributes gain the unit height's value in front
LIFTED = {"kernel_shape": 1, "strides": 1, "dilations": 1, "output_shape": 1, "output_padding": 0}


def _spatial(m, n, x, volumes: bool = False) -> tuple[dict, Value]:
    """The node's attributes and input as a 2-D (NCHW) layer takes them: a 1-D layer (rank-3 input) runs as
    a 2-D one over a unit height, so every conv/pool kernel, pass and quantization rule serves it. With
    `volumes`, a 3-D layer (rank-5 input) is taken as it is."""
    at = dict(n.attrs)
    if x.rank == 4 or (volumes and x.rank == 5):
        return at, x
    if x.rank != 3:
        dims = "1-D, 2-D and 3-D" if volumes else "1-D and 2-D"
        raise EmberError(f"only {dims} {n.op} is supported, got a rank-{x.rank} input")
    for key, unit in LIFTED.items():
        if key in at:
            at[key] = [unit, *at[key]]
    if "pads" in at:
        at["pads"] = [0, at["pads"][0], 0, at["pads"][1]]
    return at, _unit_height(m, x)


def _unit_height(m, x):
    return m.emit1("unsqueeze", [x], {"axes": [2]})


def _emit_spatial(m, n, op: str, inputs: list, attrs: dict, one_d: bool) -> list:
    """Emit the 2-D layer; a lifted 1-D one's result loses its unit height again."""
    if not one_d:
        return m.emit(op, inputs, attrs, _outs(n, 1))
    return m.emit("squeeze", [m.emit1(op, inputs, attrs)], {"axes": [2]}, _outs(n, 1))


@onnx_op("Conv")
def _conv(m, n):
    x, w, b = (m.ins(n) + [None])[:3]
    at, x4 = _spatial(m, n, x, volumes=True)
    w = w if x4 is x else _unit_height(m, w)
    dims = x4.rank - 2
    strides = at.get("strides", [1] * dims)
    dil = at.get("dilations", [1] * dims)
    kernel = at.get("kernel_shape", list(w.shape[2:]))
    attrs = {
        "strides": strides,
        "dilations": dil,
        "group": at.get("group", 1),
        "pads": _auto_pads(at, x4, kernel, strides, dil),
    }
    return _emit_spatial(m, n, "conv3d" if dims == 3 else "conv2d", [x4, w, b], attrs, x4 is not x)


@onnx_op("ConvTranspose")
def _conv_transpose(m, n):
    x, w, b = (m.ins(n) + [None])[:3]
    at, x4 = _spatial(m, n, x, volumes=True)
    w = w if x4 is x else _unit_height(m, w)
    dims = x4.rank - 2
    strides = at.get("strides", [1] * dims)
    dil = at.get("dilations", [1] * dims)
    out_pad = list(at.get("output_padding", [0] * dims))
    pads = list(at.get("pads", [0] * 2 * dims))
    mode = at.get("auto_pad", "NOTSET")
    if "output_shape" in at or mode in ("SAME_UPPER", "SAME_LOWER"):
        want = at.get("output_shape") or [d * s for d, s in zip(x4.shape[2:], strides)]
        want = list(want)[-dims:]
        pads = [0] * 2 * dims
        for i in range(dims):
            total = strides[i] * (x4.shape[2 + i] - 1) + out_pad[i] + (w.shape[2 + i] - 1) * dil[i] + 1 - want[i]
            lo = total // 2 if mode == "SAME_UPPER" else total - total // 2
            pads[i], pads[i + dims] = lo, total - lo
    attrs = {
        "strides": strides,
        "dilations": dil,
        "group": at.get("group", 1),
        "pads": pads,
        "output_padding": out_pad,
    }
    op = "conv3d_transpose" if dims == 3 else "conv2d_transpose"
    return _emit_spatial(m, n, op, [x4, w, b], attrs, x4 is not x)


@onnx_op("MaxPool", "AveragePool")
def _pool(m, n):
    x = m.inp(n, 0)
    if n.op == "MaxPool" and len(n.outputs) > 1 and n.outputs[1].outputs:
        raise EmberError("the MaxPool indices output is not supported")
    at, x4 = _spatial(m, n, x, volumes=True)
    kernel = at["kernel_shape"]
    strides = at.get("strides", [1] * len(kernel))
    dil = at.get("dilations", [1] * len(kernel))
    attrs = {
        "kernel": kernel,
        "strides": strides,
        "dilations": dil,
        "ceil_mode": at.get("ceil_mode", 0),
        "pads": _auto_pads(at, x4, kernel, strides, dil),
    }
    if n.op == "AveragePool":
        attrs["count_include_pad"] = at.get("count_include_pad", 0)
    op = ("max_pool" if n.op == "MaxPool" else "avg_pool") + ("3d" if len(kernel) == 3 else "2d")
    return _emit_spatial(m, n, op, [x4], attrs, x4 is not x)


@onnx_op("BatchNormalization")
def _batch_norm(m, n):
    if n.attrs.get("training_mode", 0):
        raise EmberError("training-mode BatchNormalization is not supported")
    return m.emit("batch_norm", m.ins(n)[:5], {"epsilon": n.attrs.get("epsilon", 1e-5)}, _outs(n, 1))


@onnx_op("Softmax", "LogSoftmax")
def _softmax(m, n):
    x = m.inp(n, 0)
    op = "softmax" if n.op == "Softmax" else "log_softmax"
    axis = norm_axis(n.attrs.get("axis", 1 if m.opset < 13 else -1), x.rank) if x.rank else 0
    if m.opset >= 13 or axis == x.rank - 1:
        return m.emit(op, [x], {"axis": axis}, _outs(n))
    trailing = [i for i in range(axis, x.rank) if x.shape[i] != 1]
    if len(trailing) == 1 and all(isinstance(x.shape[i], int) for i in range(axis, x.rank)):
        return m.emit(op, [x], {"axis": trailing[0]}, _outs(n))  # flattening would only drop 1s
    # Before opset 13 the op flattened to 2-D at `axis` first.
    flat = m.emit1("flatten", [x], {"axis": axis})
    y = m.emit1(op, [flat], {"axis": 1})
    shape = m.int_array(x.shape)
    return m.emit("reshape", [y, shape], {}, _outs(n))


@onnx_op("LayerNormalization")
def _layer_norm(m, n):
    attrs = {"axis": n.attrs.get("axis", -1), "epsilon": n.attrs.get("epsilon", 1e-5)}
    return m.emit("layer_norm", m.ins(n)[:3], attrs, _outs(n, 1))


@onnx_op("Gemm")
def _gemm(m, n):
    a, b, c = (m.ins(n) + [None])[:3]
    if n.attrs.get("transA", 0):
        a = m.emit1("transpose", [a], {"perm": [1, 0]})
    if not n.attrs.get("transB", 0):
        b = m.emit1("transpose", [b], {"perm": [1, 0]})
    alpha, beta = n.attrs.get("alpha", 1.0), n.attrs.get("beta", 1.0)
    if alpha != 1.0:
        b = m.emit1("mul", [b, m.scalar(alpha, b)])
    name = n.outputs[0].name
    bias_ok = c is not None and beta == 1.0 and c.rank >= 1 and c.shape[-1] == b.shape[0] and c.shape[:-1] in ((), (1,))
    if bias_ok:
        if c.rank == 2:
            c = m.emit1("reshape", [c, m.int_array([-1])])
        return [m.emit1("dense", [a, b, c], name=name)]
    y = m.emit1("dense", [a, b], name=None if c is not None else name)
    if c is None:
        return [y]
    if beta != 1.0:
        c = m.emit1("mul", [c, m.scalar(beta, c)])
    return [m.emit1("add", [y, c], name=name)]


@onnx_op("Reshape")
def _reshape(m, n):
    return m.emit("reshape", m.ins(n), {"allowzero": n.attrs.get("allowzero", 0)}, _outs(n))


@onnx_op("Transpose")
def _transpose(m, n):
    x = m.inp(n, 0)
    perm = n.attrs.get("perm", list(reversed(range(x.rank))))
    return m.emit("transpose", [x], {"perm": perm}, _outs(n))


@onnx_op("Squeeze", "Unsqueeze")
def _squeeze(m, n):
    x = m.inp(n, 0)
    axes = n.attrs.get("axes") if m.opset < 13 else m.ints(n, 1, f"{n.op} axes")
    if axes is None:
        if n.op == "Unsqueeze":
            raise EmberError("Unsqueeze needs axes")
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    return m.emit(n.op.lower(), [x], {"axes": axes}, _outs(n))


@onnx_op("Split")
def _split(m, n):
    x = m.inp(n, 0)
    axis = norm_axis(n.attrs.get("axis", 0), x.rank)
    sizes = n.attrs.get("split") if m.opset < 13 else m.ints(n, 1, "Split sizes")
    if sizes is None:
        k = n.attrs.get("num_outputs", len(n.outputs))
        dim = x.shape[axis]
        if not isinstance(dim, int):
            raise EmberError("splitting a dynamic axis evenly needs static shapes", hint="pass --input-shape")
        chunk = -(-dim // k)
        sizes = [chunk] * (dim // chunk) + ([dim % chunk] if dim % chunk else [])
    return m.emit("split", [x], {"axis": axis, "sizes": sizes}, _outs(n))


@onnx_op("Slice")
def _slice(m, n):
    x = m.inp(n, 0)
    if m.opset < 10:
        g = m.graph
        arr = lambda k: None if k not in n.attrs else g.add_constant(np.array(n.attrs[k], np.int64), k)  # noqa: E731
        return m.emit("slice", [x, arr("starts"), arr("ends"), arr("axes")], {}, _outs(n))
    return m.emit("slice", m.ins(n)[:5], {}, _outs(n))


@onnx_op("Pad")
def _pad(m, n):
    x = m.inp(n, 0)
    mode = n.attrs.get("mode", "constant")
    if m.opset < 11:
        pads, value = list(n.attrs["pads"]), float(n.attrs.get("value", 0.0))
    else:
        pads = m.ints(n, 1, "Pad pads")
        cval = m.const(n, 2, "Pad constant_value")
        value = 0.0 if cval is None or cval.size == 0 else float(np.asarray(cval).reshape(-1)[0])
        axes = m.ints(n, 3, "Pad axes")
        if axes is not None:
            full = [0] * (2 * x.rank)
            for j, ax in enumerate(axes):
                full[ax % x.rank], full[ax % x.rank + x.rank] = pads[j], pads[j + len(axes)]
            pads = full
    return m.emit("pad", [x], {"pads": pads, "mode": mode, "value": value}, _outs(n))


@onnx_op("Resize", "Upsample")
def _resize(m, n):
    x = m.inp(n, 0)
    if x.rank != 4 or not all(isinstance(d, int) for d in x.shape):
        raise EmberError(f"{n.op} needs a static rank-4 input", hint="pass --input-shape")
    if n.op == "Upsample" or m.opset < 11:
        scales, sizes = m.const(n, 1, "scales") if len(n.inputs) > 1 else n.attrs.get("scales"), None
    else:
        scales, sizes = m.const(n, 2, "Resize scales"), m.ints(n, 3, "Resize sizes")
    if sizes is not None and len(sizes) == 4:
        out = list(sizes[2:])
    elif scales is not None and np.asarray(scales).size == 4:
        s = np.asarray(scales, dtype=np.float64).reshape(-1)
        if s[0] != 1 or s[1] != 1:
            raise EmberError("resizing the batch or channel axis is not supported")
        out = [int(math.floor(d * k)) for d, k in zip(x.shape[2:], s[2:])]
    else:
        raise EmberError(f"{n.op} needs 4 scales or 4 sizes")
    mode = n.attrs.get("mode", "nearest")
    default_ctm = "asymmetric" if (n.op == "Upsample" or m.opset < 11) else "half_pixel"
    attrs = {
        "sizes": out,
        "mode": mode,
        "coordinate_transformation_mode": n.attrs.get("coordinate_transformation_mode", default_ctm),
        "nearest_mode": n.attrs.get("nearest_mode", "round_prefer_floor"),
        "cubic_coeff_a": n.attrs.get("cubic_coeff_a", -0.75),
    }
    if n.op == "Upsample" or m.opset < 11:
        attrs["nearest_mode"] = "floor"
    return m.emit("resize2d", [x], attrs, _outs(n))


@onnx_op("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd")
def _reduce(m, n):
    op = {
        "ReduceMean": "reduce_mean",
        "ReduceSum": "reduce_sum",
        "ReduceMax": "reduce_max",
        "ReduceMin": "reduce_min",
        "ReduceProd": "reduce_prod",
    }[n.op]
    x, axes = m.inp(n, 0), reduce_axes(m, n)
    if axes is None:
        return m.emit("identity", [x], {}, _outs(n))
    return m.emit(op, [x], {"axes": axes, "keepdims": n.attrs.get("keepdims", 1)}, _outs(n))


def reduce_axes(m: Importer, n: gs.Node) -> list[int] | None:
    """A Reduce op's axes ([]: all of them), or None when it reduces nothing (noop_with_empty_axes)."""
    axes_as_input = m.opset >= 18 or (n.op == "ReduceSum" and m.opset >= 13)
    axes = m.ints(n, 1, f"{n.op} axes") if axes_as_input else n.attrs.get("axes")
    if not axes and n.attrs.get("noop_with_empty_axes", 0):
        return None
    return list(axes or [])


@onnx_op("CumSum")
def _cumsum(m, n):
    axis = m.ints(n, 1, "CumSum axis")
    attrs = {"axis": axis[0], "exclusive": n.attrs.get("exclusive", 0), "reverse": n.attrs.get("reverse", 0)}
    return m.emit("cumsum", [m.inp(n, 0)], attrs, _outs(n))


@onnx_op("TopK")
def _topk(m, n):
    k = m.ints(n, 1, "TopK k") if m.opset >= 10 else [n.attrs["k"]]
    attrs = {"k": k[0], "axis": n.attrs.get("axis", -1), "largest": n.attrs.get("largest", 1)}
    return m.emit("topk", [m.inp(n, 0)], attrs, _outs(n))


@onnx_op("OneHot")
def _one_hot(m, n):
    depth = m.const(n, 1, "OneHot depth")
    values = np.asarray(m.const(n, 2, "OneHot values")).reshape(-1)
    attrs = {
        "depth": int(np.asarray(depth).reshape(-1)[0]),
        "axis": n.attrs.get("axis", -1),
        "off": float(values[0]),
        "on": float(values[1]),
        "dtype": dtypes.from_numpy(values.dtype),
    }
    indices = m.inp(n, 0)
    if indices.dtype not in ("i32", "i64"):
        indices = m.emit1("cast", [indices], {"to": "i64"})
    return m.emit("one_hot", [indices], attrs, _outs(n))


@onnx_op("ArgMax", "ArgMin")
def _arg(m, n):
    if n.attrs.get("select_last_index", 0):
        raise EmberError(f"{n.op} with select_last_index=1 is not supported")
    attrs = {"axis": n.attrs.get("axis", 0), "keepdims": n.attrs.get("keepdims", 1)}
    return m.emit(n.op.lower(), [m.inp(n, 0)], attrs, _outs(n))


from ember.frontends.onnx import composite_ops, quant_ops, recurrent_ops  # noqa: E402, F401  (register their ops)
