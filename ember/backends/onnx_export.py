"""Exporting Ember IR to ONNX (opset 20) through onnx-graphsurgeon, so any stage runs in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.decompose import decompose
from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import get_schema
from ember.ir.ops.nn import HWIO_TO_OIHW, TO_NCHW, TO_NHWC

OPSET = 20

_RENAMES = {
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "erf": "Erf",
    "neg": "Neg",
    "abs": "Abs",
    "reciprocal": "Reciprocal",
    "floor": "Floor",
    "ceil": "Ceil",
    "round": "Round",
    "sign": "Sign",
    "sin": "Sin",
    "cos": "Cos",
    "tan": "Tan",
    "atan": "Atan",
    "asin": "Asin",
    "acos": "Acos",
    "sinh": "Sinh",
    "cosh": "Cosh",
    "asinh": "Asinh",
    "acosh": "Acosh",
    "atanh": "Atanh",
    "not": "Not",
    "isnan": "IsNaN",
    "bitwise_not": "BitwiseNot",
    "bitwise_and": "BitwiseAnd",
    "bitwise_or": "BitwiseOr",
    "bitwise_xor": "BitwiseXor",
    "identity": "Identity",
    "softplus": "Softplus",
    "hard_swish": "HardSwish",
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "pow": "Pow",
    "max": "Max",
    "min": "Min",
    "equal": "Equal",
    "less": "Less",
    "greater": "Greater",
    "less_equal": "LessOrEqual",
    "greater_equal": "GreaterOrEqual",
    "and": "And",
    "or": "Or",
    "xor": "Xor",
    "where": "Where",
    "matmul": "MatMul",
    "global_avg_pool": "GlobalAveragePool",
    "global_max_pool": "GlobalMaxPool",
    "expand": "Expand",
    "tile": "Tile",
    "range": "Range",
    "batch_norm": "BatchNormalization",
    "lrn": "LRN",
    "softmax": "Softmax",
    "log_softmax": "LogSoftmax",
    "layer_norm": "LayerNormalization",
    "transpose": "Transpose",
    "concat": "Concat",
    "gather": "Gather",
    "gather_elements": "GatherElements",
    "shape": "Shape",
    "flatten": "Flatten",
    "reshape": "Reshape",
    "elu": "Elu",
    "leaky_relu": "LeakyRelu",
    "hard_sigmoid": "HardSigmoid",
    "gelu": "Gelu",
    "argmax": "ArgMax",
    "argmin": "ArgMin",
}
_REDUCE = {
    "reduce_mean": "ReduceMean",
    "reduce_sum": "ReduceSum",
    "reduce_max": "ReduceMax",
    "reduce_min": "ReduceMin",
    "reduce_prod": "ReduceProd",
}
# Composites ONNX has an op for: exported whole, not as their decompositions
ONNX_COMPOSITES = ("conv3d", "conv3d_transpose", "max_pool3d", "avg_pool3d")

_ATTR_RENAMES = {
    "approximate": "approximate",
    "axis": "axis",
    "epsilon": "epsilon",
    "alpha": "alpha",
    "beta": "beta",
    "bias": "bias",
    "size": "size",
    "perm": "perm",
    "start": "start",
    "end": "end",
    "keepdims": "keepdims",
    "allowzero": "allowzero",
}


class _Exporter:
    def __init__(self, graph: Graph):
        self.graph = graph
        # keyed by the Value, not id(): a composite's decomposition makes Values that die after its export,
        # and a later one's new Values could reuse their ids
        self.tensors: dict[Value, gs.Tensor] = {}
        self.nodes: list[gs.Node] = []
        self.count = 0

    def tensor(self, v) -> gs.Tensor:
        if v is None:
            return gs.Variable.empty()
        if v not in self.tensors:
            if v.is_const:
                self.tensors[v] = gs.Constant(v.name, np.asarray(v.const, order="C"))  # 0-d stays 0-d
            else:
                shape = [d if isinstance(d, int) else (None if d == "?" else d) for d in v.shape]
                self.tensors[v] = gs.Variable(v.name, dtypes.to_numpy(v.dtype), shape)
        return self.tensors[v]

    def const(self, array, hint: str) -> gs.Constant:
        self.count += 1
        return gs.Constant(f"{hint}__c{self.count}", np.asarray(array))

    def temp(self, hint: str) -> gs.Variable:
        self.count += 1
        return gs.Variable(f"{hint}__t{self.count}")

    def add(self, op: str, inputs, outputs, name: str, **attrs) -> None:
        self.nodes.append(gs.Node(op, name=name, attrs=attrs, inputs=list(inputs), outputs=list(outputs)))


def _ints(values) -> np.ndarray:
    return np.array(list(values), dtype=np.int64)


def _as_nchw(node: Node, emit) -> Value:
    """An NHWC conv2d or pool as transpose -> NCHW op -> transpose (ONNX has no NHWC Conv)."""
    x, *rest = node.inputs
    if node.op == "conv2d":
        w = rest[0]
        rest[0] = w.const.transpose(HWIO_TO_OIHW).copy() if w.is_const else emit("transpose", w, perm=HWIO_TO_OIHW)
    y = emit(node.op, emit("transpose", x, perm=TO_NCHW), *rest, **{**node.attrs, "layout": "NCHW"})
    return emit("transpose", y, perm=TO_NHWC)


def _export_node(e: _Exporter, n: Node) -> None:
    composite = get_schema(n.op).decompose if n.op not in ONNX_COMPOSITES else None
    expand = composite or (_as_nchw if n.attrs.get("layout") == "NHWC" else None)
    if expand is not None:
        for sub in decompose(n, expand):
            _export_node(e, sub)
        return
    ins = [e.tensor(v) for v in n.inputs]
    outs = [e.tensor(v) for v in n.outputs]
    a = n.attrs
    if n.op in _RENAMES:
        attrs = {_ATTR_RENAMES[k]: v for k, v in a.items() if k in _ATTR_RENAMES}
        if n.op == "layer_norm":
            attrs = {"axis": a["axis"], "epsilon": a["epsilon"]}
        e.add(
            _RENAMES[n.op], ins, outs, n.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()}
        )
    elif n.op in _REDUCE:
        axes = [e.const(_ints(a["axes"]), n.name)] if a["axes"] else []
        e.add(_REDUCE[n.op], ins + axes, outs, n.name, keepdims=a["keepdims"])
    elif n.op == "silu":
        t = e.temp(n.name)
        e.add("Sigmoid", ins, [t], n.name + "/sigmoid")
        e.add("Mul", [ins[0], t], outs, n.name)
    elif n.op == "clip":
        dt = dtypes.to_numpy(n.inputs[0].dtype)
        lo = e.const(np.asarray(a["min"], dt), n.name) if np.isfinite(a["min"]) else gs.Variable.empty()
        hi = e.const(np.asarray(a["max"], dt), n.name) if np.isfinite(a["max"]) else gs.Variable.empty()
        e.add("Clip", [ins[0], lo, hi], outs, n.name)
    elif n.op == "topk":
        k = e.const(np.asarray([a["k"]], np.int64), n.name)
        e.add("TopK", [ins[0], k], outs, n.name, axis=a["axis"], largest=a["largest"])
    elif n.op in ("gather_nd", "scatter_elements", "scatter_nd"):
        onnx_op = {"gather_nd": "GatherND", "scatter_elements": "ScatterElements", "scatter_nd": "ScatterND"}[n.op]
        e.add(onnx_op, ins, outs, n.name, **a)
    elif n.op == "one_hot":
        depth = e.const(np.asarray(a["depth"], np.int64), n.name)
        values = e.const(np.asarray([a["off"], a["on"]], dtypes.to_numpy(a["dtype"])), n.name)
        e.add("OneHot", [ins[0], depth, values], outs, n.name, axis=a["axis"])
    elif n.op == "einsum":
        e.add("Einsum", ins, outs, n.name, equation=a["equation"])
    elif n.op in ("left_shift", "right_shift"):
        e.add("BitShift", ins, outs, n.name, direction="LEFT" if n.op == "left_shift" else "RIGHT")
    elif n.op == "cumsum":
        axis = e.const(np.asarray(a["axis"], np.int64), n.name)
        e.add("CumSum", [ins[0], axis], outs, n.name, exclusive=a["exclusive"], reverse=a["reverse"])
    elif n.op in ("mod", "floor_mod"):
        e.add("Mod", ins, outs, n.name, fmod=int(n.op == "mod"))
    elif n.op == "cast":
        e.add("Cast", ins, outs, n.name, to=int(onnx.helper.np_dtype_to_tensor_dtype(dtypes.to_numpy(a["to"]))))
    elif n.op in ("conv2d", "conv3d", "conv2d_transpose", "conv3d_transpose"):
        attrs = dict(
            strides=list(a["strides"]),
            pads=list(a["pads"]),
            dilations=list(a["dilations"]),
            group=a["group"],
            kernel_shape=list(n.inputs[1].shape[2:]),
        )
        transposed = n.op.endswith("_transpose")
        if transposed:
            attrs["output_padding"] = list(a["output_padding"])
        e.add("ConvTranspose" if transposed else "Conv", ins, outs, n.name, **attrs)
    elif n.op in ("max_pool2d", "avg_pool2d", "max_pool3d", "avg_pool3d"):
        attrs = dict(
            kernel_shape=list(a["kernel"]),
            strides=list(a["strides"]),
            pads=list(a["pads"]),
            dilations=list(a["dilations"]),
            ceil_mode=a["ceil_mode"],
        )
        if n.op.startswith("avg"):
            attrs["count_include_pad"] = a["count_include_pad"]
        e.add("MaxPool" if n.op.startswith("max") else "AveragePool", ins, outs, n.name, **attrs)
    elif n.op == "dense":
        w = n.inputs[1]
        wt = e.const(np.ascontiguousarray(w.const.T), n.name) if w.is_const else e.temp(n.name)
        if not w.is_const:
            e.add("Transpose", [ins[1]], [wt], n.name + "/wt", perm=[1, 0])
        if len(ins) > 2 and n.inputs[2] is not None:
            t = e.temp(n.name)
            e.add("MatMul", [ins[0], wt], [t], n.name + "/matmul")
            e.add("Add", [t, ins[2]], outs, n.name)
        else:
            e.add("MatMul", [ins[0], wt], outs, n.name)
    elif n.op in ("squeeze", "unsqueeze"):
        e.add(n.op.capitalize(), [ins[0], e.const(_ints(a["axes"]), n.name)], outs, n.name)
    elif n.op == "split":
        e.add("Split", [ins[0], e.const(_ints(a["sizes"]), n.name)], outs, n.name, axis=a["axis"])
    elif n.op == "slice":
        e.add("Slice", ins, outs, n.name)
    elif n.op == "constant_of_shape":
        value = onnx.helper.make_tensor(
            "value", onnx.helper.np_dtype_to_tensor_dtype(dtypes.to_numpy(a["dtype"])), [1], [a["value"]]
        )
        e.add("ConstantOfShape", ins, outs, n.name, value=value)
    elif n.op == "pad":
        dt = dtypes.to_numpy(n.inputs[0].dtype)
        e.add(
            "Pad",
            [ins[0], e.const(_ints(a["pads"]), n.name), e.const(np.asarray(a["value"], dt), n.name)],
            outs,
            n.name,
            mode=a["mode"],
        )
    elif n.op == "resize2d":
        x = n.inputs[0]
        sizes = e.const(_ints([*x.shape[:2], *a["sizes"]]), n.name)
        e.add(
            "Resize",
            [ins[0], gs.Variable.empty(), gs.Variable.empty(), sizes],
            outs,
            n.name,
            mode=a["mode"],
            coordinate_transformation_mode=a["coordinate_transformation_mode"],
            nearest_mode=a["nearest_mode"],
            cubic_coeff_a=a["cubic_coeff_a"],
        )
    else:
        raise EmberError(f"no ONNX export for op '{n.op}'", node=n.name, op=n.op)


def export_onnx(graph: Graph) -> onnx.ModelProto:
    """An ONNX ModelProto computing the same function as `graph`."""
    e = _Exporter(graph)
    inputs = [e.tensor(v) for v in graph.inputs]
    for node in graph.nodes:
        _export_node(e, node)
    outputs = []
    for v in graph.outputs:
        t = e.tensor(v)
        if isinstance(t, gs.Constant):
            out = gs.Variable(v.name + "__out", dtypes.to_numpy(v.dtype), list(v.shape))
            e.add("Identity", [t], [out], v.name + "/output")
            t = out
        if t.dtype is None:
            t.dtype, t.shape = dtypes.to_numpy(v.dtype), list(v.shape)
        outputs.append(t)
    g = gs.Graph(nodes=e.nodes, inputs=inputs, outputs=outputs, name=graph.name, opset=OPSET)
    model = gs.export_onnx(g)
    model.ir_version = min(model.ir_version, 10)
    return model
