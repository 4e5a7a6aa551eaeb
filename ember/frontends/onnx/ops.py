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


from ember.frontends.onnx import composite_ops, nn_ops, quant_ops, recurrent_ops  # noqa: E402, F401  (register their ops)
