"""Lowering rules: one function per Ember op, building Relax expressions with a BlockBuilder."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from tvm import relax, topi
from tvm.relax import op as R

from ember.backends.tvm import expand_depthwise, grouped, stem, winograd
from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.decompose import decompose
from ember.ir.graph import Graph, Node, Value

Rule = Callable[["Lowering", Node, list], object]
RULES: dict[str, Rule] = {}
# op -> the producers of a node of it that its rule computes inside its own kernel (in graph, for a device kind);
# they are not lowered by themselves, the rule reads their inputs (Lowering.absorbed, Lowering.values)
Absorbs = Callable[[Graph, Node, str], list[Node]]
ABSORBS: dict[str, Absorbs] = {}


class Lowering:
    """State of one lowering: the BlockBuilder and helpers rules share."""

    def __init__(self, bb: relax.BlockBuilder, device: str, winograd: bool, row_limit: Callable[[int], int]):
        self.bb = bb
        self.device = device  # the target's device kind ("cpu", "cuda", "opencl", ...): some rules differ by it
        self.winograd = winograd  # 3x3 convs that fit run as Winograd (see winograd.py)
        self.row_limit = row_limit  # register rows of the target's float32 matmul tile over N output columns
        self.values: dict[int, relax.Expr] = {}  # lowered values by id(Value)
        self.absorbed: dict[int, list[Node]] = {}  # id(node) -> the producers its rule computes (ABSORBS)

    def plan_absorbed(self, graph: Graph) -> set[int]:
        """Record which producers each node's rule absorbs (ABSORBS); returns the ids of the absorbed nodes."""
        for n in graph.nodes:
            if n.op in ABSORBS and (producers := ABSORBS[n.op](graph, n, self.device)):
                self.absorbed[id(n)] = producers
        return {id(p) for producers in self.absorbed.values() for p in producers}

    def const(self, array, dtype: str | None = None) -> relax.Constant:
        arr = np.asarray(array, dtype=None if dtype is None else dtypes.to_numpy(dtype))
        return relax.const(arr, dtypes.to_tvm(dtypes.from_numpy(arr.dtype)))

    def scalar(self, value: float, dtype: str) -> relax.Constant:
        return relax.const(np.asarray(value, dtype=dtypes.to_numpy(dtype)), dtypes.to_tvm(dtype))

    def operand(self, env: dict[int, relax.Expr], v: Value | None) -> relax.Expr | None:
        """v's expression: bound in `env` (by id), or a constant, made once."""
        if v is None:
            return None
        if v.is_const and id(v) not in env:
            env[id(v)] = self.const(v.const)
        return env[id(v)]

    def decomposed(self, n: Node, args: list) -> relax.Expr:
        """`n` lowered as the primitive ops of its decomposition, each by its own rule; the last one unbound."""
        env = {id(v): x for v, x in zip(n.inputs, args) if v is not None}
        subs = decompose(n)
        for sub in subs[:-1]:
            env[id(sub.output)] = self.bb.emit(RULES[sub.op](self, sub, [self.operand(env, v) for v in sub.inputs]))
        return RULES[subs[-1].op](self, subs[-1], [self.operand(env, v) for v in subs[-1].inputs])


def rule(*ops: str):
    def wrap(fn: Rule) -> Rule:
        for o in ops:
            RULES[o] = fn
        return fn

    return wrap


def absorbs(op: str):
    """Register the function naming the producers `op`'s rule computes inside its own kernel (ABSORBS)."""

    def wrap(fn: Absorbs) -> Absorbs:
        ABSORBS[op] = fn
        return fn

    return wrap


def _shape_of(v, node: Node) -> list[int]:
    """The static shape of a value a rule needs, or an error naming the node."""
    if not v.is_static:
        raise EmberError(
            f"shape {list(v.shape)} of '{v.name}' is not static",
            node=node.name,
            op=node.op,
            hint="pass --input-shape to fix dynamic input dims; a shape computed from input values cannot be built",
        )
    return list(v.shape)


def _shape(node: Node) -> list[int]:
    return _shape_of(node.output, node)


_UNARY = {
    "relu": R.nn.relu,
    "sigmoid": R.sigmoid,
    "tanh": R.tanh,
    "exp": R.exp,
    "log": R.log,
    "sqrt": R.sqrt,
    "erf": R.erf,
    "neg": R.negative,
    "abs": R.abs,
    "floor": R.floor,
    "ceil": R.ceil,
    "round": R.round,
    "sign": R.sign,
    "sin": R.sin,
    "cos": R.cos,
    "tan": R.tan,
    "atan": R.atan,
    "asin": R.asin,
    "acos": R.acos,
    "asinh": R.asinh,
    "acosh": R.acosh,
    "atanh": R.atanh,
    "not": R.logical_not,
    "isnan": R.isnan,
    "bitwise_not": R.bitwise_not,
    "silu": R.nn.silu,
}
_BINARY = {
    "add": R.add,
    "sub": R.subtract,
    "mul": R.multiply,
    "max": R.maximum,
    "min": R.minimum,
    "floor_mod": R.floor_mod,
    "bitwise_and": R.bitwise_and,
    "bitwise_or": R.bitwise_or,
    "bitwise_xor": R.bitwise_xor,
    "equal": R.equal,
    "less": R.less,
    "greater": R.greater,
    "less_equal": R.less_equal,
    "greater_equal": R.greater_equal,
    "and": R.logical_and,
    "or": R.logical_or,
    "xor": R.logical_xor,
}
for _name, _fn in _UNARY.items():
    RULES[_name] = lambda L, n, a, _fn=_fn: _fn(a[0])
for _name, _fn in _BINARY.items():
    RULES[_name] = lambda L, n, a, _fn=_fn: _fn(a[0], a[1])


@rule("identity")
def _identity(L, n, a):
    return a[0]


@rule("div")
def _div(L, n, a):
    if dtypes.is_float(n.inputs[0].dtype):
        return R.divide(a[0], a[1])
    q = R.divide(R.astype(a[0], "float64"), R.astype(a[1], "float64"))
    return R.astype(R.trunc(q), dtypes.to_tvm(n.output.dtype))


@rule("einsum")
def _einsum(L, n, a):
    return R.einsum(list(a), n.attrs["equation"].replace(" ", ""))


@rule("sinh", "cosh")
def _sinh_cosh(L, n, a):
    """(e^x -/+ e^-x) / 2: LLVM's code generator has no sinh or cosh intrinsic."""
    up, down = R.exp(a[0]), R.exp(R.negative(a[0]))
    both = R.subtract(up, down) if n.op == "sinh" else R.add(up, down)
    return R.multiply(both, L.scalar(0.5, n.output.dtype))


@rule("left_shift", "right_shift")
def _shift(L, n, a):
    """a shifted by b, as numpy and ONNX define a shift by a negative count or one at least the width (what LLVM
    leaves undefined): every bit shifted out (0, or -1 for a negative signed a shifted right)."""
    dt, bits = n.output.dtype, np.iinfo(dtypes.to_numpy(n.output.dtype)).bits
    inside = R.logical_and(R.greater_equal(a[1], L.scalar(0, dt)), R.less(a[1], L.scalar(bits, dt)))
    count = R.clip(a[1], 0, bits - 1)
    if n.op == "left_shift":
        return R.where(inside, R.left_shift(a[0], count), L.scalar(0, dt))
    beyond = (
        R.where(R.less(a[0], L.scalar(0, dt)), L.scalar(-1, dt), L.scalar(0, dt)) if dt[0] == "i" else L.scalar(0, dt)
    )
    return R.where(inside, R.right_shift(a[0], count), beyond)


@rule("pow")
def _pow(L, n, a):
    if dtypes.is_float(n.inputs[0].dtype):
        return R.power(a[0], a[1])
    p = R.power(R.astype(a[0], "float64"), R.astype(a[1], "float64"))  # TVM's power takes floats only
    return R.astype(R.round(p), dtypes.to_tvm(n.output.dtype))


@rule("mod")
def _mod(L, n, a):
    if dtypes.is_float(n.inputs[0].dtype):
        return R.subtract(a[0], R.multiply(R.trunc(R.divide(a[0], a[1])), a[1]))
    return R.subtract(a[0], R.multiply(_div(L, n, a), a[1]))


@rule("reciprocal")
def _reciprocal(L, n, a):
    return R.divide(L.scalar(1.0, n.output.dtype), a[0])


@rule("softplus")
def _softplus(L, n, a):
    return R.log(R.add(L.scalar(1.0, n.output.dtype), R.exp(a[0])))


SQRT_HALF = float(np.sqrt(0.5))


@rule("gelu")
def _gelu(L, n, a):
    if n.attrs["approximate"] == "tanh":
        return R.nn.gelu_tanh(a[0])
    if n.output.dtype != "f32":
        return R.nn.gelu(a[0])

    def compute(x):  # TOPI's rational erf vectorizes; the erf intrinsic is a scalar libm call per element
        return topi.multiply(x, topi.add(0.5, topi.multiply(topi.fast_erf(topi.multiply(x, SQRT_HALF)), 0.5)))

    x = a[0] if isinstance(a[0], relax.Var) else L.bb.emit(a[0])  # emit_te takes bound values only
    return L.bb.emit_te(compute, x, primfunc_name_hint="gelu")


def _clip(L, x, lo: float, hi: float, dtype: str):
    if dtypes.is_float(dtype) and (math.isinf(lo) or math.isinf(hi)):  # R.clip's bounds are finite: keep -inf
        if math.isinf(lo) and math.isinf(hi):
            return x
        return R.minimum(x, L.scalar(hi, dtype)) if math.isinf(lo) else R.maximum(x, L.scalar(lo, dtype))
    info = np.finfo(dtypes.to_numpy(dtype)) if dtypes.is_float(dtype) else np.iinfo(dtypes.to_numpy(dtype))
    lo, hi = max(lo, float(info.min)), min(hi, float(info.max))
    return R.clip(x, lo, hi)


@rule("clip")
def _clip_rule(L, n, a):
    return _clip(L, a[0], n.attrs["min"], n.attrs["max"], n.output.dtype)


@rule("hard_sigmoid")
def _hard_sigmoid(L, n, a):
    dt = n.output.dtype
    y = R.add(R.multiply(a[0], L.scalar(n.attrs["alpha"], dt)), L.scalar(n.attrs["beta"], dt))
    return _clip(L, y, 0.0, 1.0, dt)


@rule("hard_swish")
def _hard_swish(L, n, a):
    dt = n.output.dtype
    gate = _clip(L, R.add(R.multiply(a[0], L.scalar(1 / 6, dt)), L.scalar(0.5, dt)), 0.0, 1.0, dt)
    return R.multiply(a[0], gate)


@rule("leaky_relu")
def _leaky_relu(L, n, a):
    return R.nn.leakyrelu(a[0], n.attrs["alpha"])


@rule("elu")
def _elu(L, n, a):
    dt = n.output.dtype
    neg = R.multiply(L.scalar(n.attrs["alpha"], dt), R.subtract(R.exp(a[0]), L.scalar(1.0, dt)))
    return R.where(R.greater_equal(a[0], L.scalar(0.0, dt)), a[0], neg)


@rule("where")
def _where(L, n, a):
    return R.where(a[0], a[1], a[2])


@rule("cast")
def _cast(L, n, a):
    return R.astype(a[0], dtypes.to_tvm(n.attrs["to"]))


@rule("conv2d")
def _conv2d(L, n, a):
    at = n.attrs
    nhwc = at["layout"] == "NHWC"
    per_group = grouped.padded_outputs(n, L.device)
    if absorbed := L.absorbed.get(id(n)):  # a stem conv reading its NCHW input through the transpose (stem.py)
        y = stem.conv2d(L.bb, L.values[id(absorbed[0].inputs[0])], a[1], n)
    elif L.winograd and (tile := winograd.tile_for(n, L.device)):
        y = winograd.conv2d(L.bb, a[0], n, tile, L.row_limit(n.inputs[1].shape[3]))
    else:
        weight = a[1] if per_group is None else L.const(grouped.pad_weight(n.inputs[1].const, at["group"], per_group))
        y = R.nn.conv2d(
            a[0],
            weight,
            strides=at["strides"],
            padding=at["pads"],
            dilation=at["dilations"],
            groups=at["group"],
            data_layout=at["layout"],
            kernel_layout="HWIO" if nhwc else "OIHW",
        )
        if per_group is not None:
            y = grouped.drop_padding(L.bb, y, _shape(n), at["group"], per_group)
    return y if len(a) < 3 or a[2] is None else R.add(y, R.reshape(a[2], (1, 1, 1, -1) if nhwc else (1, -1, 1, 1)))


class _Stand:
    """The attributes and output an activation rule reads, for an activation applied inside a composite."""

    def __init__(self, op: str, attrs: dict, node: Node):
        self.op, self.attrs, self.name = op, attrs, node.name
        self.output = node.output
        self.inputs = [node.output]


def layer_epilogue(L, n: Node, y, residual):
    """What a fused layer node does after its contraction `y`: add `residual` (None: none), then its activation."""
    from ember.ir.ops.fused import activation_op

    if residual is not None:
        y = R.add(y, residual)
    if n.attrs["activation"] == "none":
        return y
    unary, attrs = activation_op(n.attrs["activation"], n.attrs["act_params"])
    return RULES[unary](L, _Stand(unary, attrs, n), [y])


@rule("fused_conv2d", "fused_dense")
def _fused_layer(L, n, a):
    absorbed = L.absorbed.get(id(n), [])
    if absorbed and absorbed[0].op != "transpose":  # a depthwise conv with the expand conv before it
        return expand_depthwise.emit(L, L.values[id(absorbed[0].inputs[0])], absorbed[0], n)
    base = RULES["conv2d" if n.op == "fused_conv2d" else "dense"]  # conv2d reads an absorbed transpose's input
    return layer_epilogue(L, n, base(L, n, a[:3]), a[3] if len(a) > 3 else None)


absorbs("max_pool2d")(stem.absorbed_stem)


@absorbs("fused_conv2d")
def _absorbed_producers(graph: Graph, n: Node, device: str) -> list[Node]:
    return expand_depthwise.absorbed_expand(graph, n, device) or stem.absorbed_transpose(graph, n, device)


@rule("conv2d_transpose")
def _conv2d_transpose(L, n, a):
    at = n.attrs
    y = R.nn.conv2d_transpose(
        a[0],
        a[1],
        strides=at["strides"],
        padding=at["pads"],
        output_padding=at["output_padding"],
        dilation=at["dilations"],
        groups=at["group"],
    )
    return y if len(a) < 3 or a[2] is None else R.add(y, R.reshape(a[2], (1, -1, 1, 1)))


@rule("max_pool2d", "avg_pool2d")
def _pool(L, n, a):
    if absorbed := L.absorbed.get(id(n)):  # a max pool with the stem conv before it (stem.py)
        return stem.conv_pool(L.bb, L.values[id(absorbed[0].inputs[0])], absorbed[-1], n)
    at = n.attrs
    kw = dict(
        pool_size=at["kernel"],
        strides=at["strides"],
        padding=at["pads"],
        dilation=at["dilations"],
        ceil_mode=bool(at["ceil_mode"]),
        layout=at["layout"],
    )
    if n.op == "max_pool2d":
        return R.nn.max_pool2d(a[0], **kw)
    return R.nn.avg_pool2d(a[0], count_include_pad=bool(at["count_include_pad"]), **kw)


@rule("batch_norm")
def _batch_norm(L, n, a):
    x, scale, bias, mean, var = n.inputs
    shape = (1, -1) + (1,) * (x.rank - 2)
    eps = n.attrs["epsilon"]
    if all(v.is_const for v in (scale, bias, mean, var)):
        inv = scale.const.astype(np.float64) / np.sqrt(var.const.astype(np.float64) + eps)
        shift = bias.const - mean.const * inv
        mul = L.const(inv.reshape(shape).astype(scale.const.dtype))
        return R.add(R.multiply(a[0], mul), L.const(shift.reshape(shape).astype(scale.const.dtype)))
    dt = x.dtype
    scale, bias, mean, var = (R.reshape(v, shape) for v in a[1:])  # reshaped where each one's type is known
    inv = R.divide(scale, R.sqrt(R.add(var, L.scalar(eps, dt))))
    return R.add(R.multiply(R.subtract(a[0], mean), inv), bias)


@rule("lrn")
def _lrn(L, n, a):
    at = n.attrs
    return L.bb.emit_te(topi.nn.lrn, a[0], at["size"], 1, at["alpha"], at["beta"], at["bias"])


@rule("softmax")
def _softmax(L, n, a):
    return R.nn.softmax(a[0], axis=n.attrs["axis"])


@rule("log_softmax")
def _log_softmax(L, n, a):
    return R.nn.log_softmax(a[0], axis=n.attrs["axis"])


@rule("layer_norm")
def _layer_norm(L, n, a):
    x = n.inputs[0]
    axes = list(range(n.attrs["axis"] % x.rank, x.rank))
    bias = a[2] if len(a) > 2 and a[2] is not None else L.const(np.zeros(n.inputs[1].shape, dtypes.to_numpy(x.dtype)))
    return R.nn.layer_norm(a[0], a[1], bias, axes=axes, epsilon=n.attrs["epsilon"])


@rule("matmul")
def _matmul(L, n, a):
    return R.matmul(a[0], a[1])


@rule("dense")
def _dense(L, n, a):
    w = n.inputs[1]
    wt = L.const(np.ascontiguousarray(w.const.T)) if w.is_const else R.permute_dims(a[1], [1, 0])
    y = R.matmul(a[0], wt)
    return y if len(a) < 3 or a[2] is None else R.add(y, a[2])
