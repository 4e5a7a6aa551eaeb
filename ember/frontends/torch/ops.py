"""ATen core op -> Ember op table: elementwise math, reductions and data movement. Each entry takes the importer
and the node's operands by schema name (Values for tensors) and returns the Ember result(s). Neural-network
layers (convolution, pooling, normalization, attention) live in nn_ops.py and register into the same table."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ember.errors import EmberError
from ember.frontends.torch.importer import Importer, to_numpy
from ember.ir.graph import Value
from ember.ir.ops.shapes import UNKNOWN

Convert = Callable[[Importer, dict[str, Any]], Any]
ATEN_OPS: dict[str, Convert] = {}


def aten(*names: str):
    """Register a converter for ATen overloads, written without the `aten.` prefix (`relu.default`)."""

    def wrap(fn: Convert) -> Convert:
        for n in names:
            ATEN_OPS[f"aten.{n}"] = fn
        return fn

    return wrap


def _unary(ember_op: str, **attrs: Any) -> Convert:
    return lambda m, a: m.emit1(ember_op, [m.cast(m.tensor(a["self"]), m.out_dtype())], attrs)


for _aten, _ember in {
    "relu": "relu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "exp": "exp",
    "log": "log",
    "sqrt": "sqrt",
    "erf": "erf",
    "neg": "neg",
    "abs": "abs",
    "reciprocal": "reciprocal",
    "floor": "floor",
    "ceil": "ceil",
    "round": "round",
    "sign": "sign",
    "sin": "sin",
    "cos": "cos",
    "tan": "tan",
    "atan": "atan",
    "asin": "asin",
    "acos": "acos",
    "sinh": "sinh",
    "cosh": "cosh",
    "asinh": "asinh",
    "acosh": "acosh",
    "atanh": "atanh",
    "silu": "silu",
    "hardswish": "hard_swish",
}.items():
    ATEN_OPS[f"aten.{_aten}.default"] = _unary(_ember)
ATEN_OPS["aten.hardsigmoid.default"] = _unary("hard_sigmoid", alpha=1 / 6, beta=0.5)
ATEN_OPS["aten.isnan.default"] = lambda m, a: m.emit1("isnan", [a["self"]])
ATEN_OPS["aten.logical_not.default"] = lambda m, a: m.emit1("not", [m.cast(a["self"], "bool")])


@aten("gelu.default")
def _gelu(m, a):
    return m.emit1("gelu", [a["self"]], {"approximate": a["approximate"]})


@aten("leaky_relu.default")
def _leaky_relu(m, a):
    return m.emit1("leaky_relu", [a["self"]], {"alpha": a["negative_slope"]})


@aten("elu.default")
def _elu(m, a):
    """scale * elu(input_scale * x, alpha): SELU and CELU decompose to it."""
    x = a["self"]
    if a["input_scale"] != 1:
        x = m.emit1("mul", [x, m.tensor(float(a["input_scale"]))])
    y = m.emit1("elu", [x], {"alpha": float(a["alpha"])})
    return y if a["scale"] == 1 else m.emit1("mul", [y, m.tensor(float(a["scale"]))])


@aten("hardtanh.default")
def _hardtanh(m, a):
    return m.emit1("clip", [a["self"]], {"min": a["min_val"], "max": a["max_val"]})


@aten("clamp.default")
def _clamp(m, a):
    lo = -math.inf if a["min"] is None else a["min"]
    hi = math.inf if a["max"] is None else a["max"]
    return m.emit1("clip", [m.cast(a["self"], m.out_dtype())], {"min": lo, "max": hi})


@aten("rsqrt.default")
def _rsqrt(m, a):
    return m.emit1("reciprocal", [m.emit1("sqrt", [a["self"]])])


_ARITH = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow", "maximum": "max", "minimum": "min"}
_COMPARE = {"eq": "equal", "lt": "less", "gt": "greater", "le": "less_equal", "ge": "greater_equal"}
_LOGIC = {"logical_and": "and", "logical_or": "or", "logical_xor": "xor"}


def _binary(ember_op: str, kind: str) -> Convert:
    """A broadcasting binary op; operands are cast to the type torch computes in (the result's for arithmetic)."""

    def convert(m: Importer, a: dict[str, Any]) -> Value:
        x, y = a["self"], a["other"] if "other" in a else a["exponent"]
        if kind == "arith":
            dt = m.out_dtype()
        elif kind == "logic":
            dt = "bool"
        else:
            dt = next(v.dtype for v in (x, y) if isinstance(v, Value))
        x, y = m.cast(m.tensor(x, dt), dt), m.cast(m.tensor(y, dt), dt)
        if a.get("alpha", 1) != 1:
            y = m.emit1("mul", [y, m.tensor(a["alpha"], dt)])
        return m.emit1(ember_op, [x, y])

    return convert


for _group, _kind in ((_ARITH, "arith"), (_COMPARE, "compare"), (_LOGIC, "logic")):
    for _aten, _ember in _group.items():
        for _overload in ("Tensor", "Scalar", "default", "Tensor_Scalar", "Tensor_Tensor"):
            ATEN_OPS[f"aten.{_aten}.{_overload}"] = _binary(_ember, _kind)


@aten("ne.Tensor", "ne.Scalar")
def _ne(m, a):
    return m.emit1("not", [_binary("equal", "compare")(m, a)])


@aten("rsub.Scalar", "rsub.Tensor")
def _rsub(m, a):
    return _binary("sub", "arith")(m, {"self": a["other"], "other": a["self"], "alpha": a["alpha"]})


@aten("div.Tensor_mode")
def _div_mode(m, a):
    q, mode = _binary("div", "arith")(m, a), a["rounding_mode"]
    if mode is None or (mode == "trunc" and not q.dtype.startswith("f")):
        return q
    if mode == "floor" and q.dtype.startswith("f"):
        return m.emit1("floor", [q])
    raise EmberError(f"division with rounding_mode='{mode}' on {q.dtype} is not supported")


@aten("where.self")
def _where(m, a):
    dt = m.out_dtype()
    x, y = (m.cast(m.tensor(a[k], dt), dt) for k in ("self", "other"))
    return m.emit1("where", [m.cast(a["condition"], "bool"), x, y])


# ---- element type, copies, constants ---------------------------------------------------


@aten("clone.default", "alias.default", "detach.default", "lift_fresh_copy.default", "dropout.default")
def _same(m, a):
    return a["self"] if "self" in a else a["input"]


@aten("_to_copy.default")
def _to_copy(m, a):
    return m.cast(a["self"], m.out_dtype())


@aten("scalar_tensor.default")
def _scalar_tensor(m, a):
    return m.graph.add_constant(np.asarray(a["s"], dtype=_np(m.out_dtype())), "scalar")


@aten("full.default", "arange.start_step", "arange.default", "arange.start")
def _constant_result(m, a):
    """A creation op whose result is fixed by its arguments: torch computes it now."""
    args = [_number(m, v) for v in m.resolve(m.node.args)]
    kwargs = {k: _number(m, m.resolve(v)) for k, v in m.node.kwargs.items()}
    return m.graph.add_constant(to_numpy(m.node.target(*args, **kwargs)), "const")


def _number(m: Importer, v: Any) -> Any:
    """A creation op's argument as a plain value; sizes traced from dynamic dims must be fixed by then."""
    if isinstance(v, (list, tuple)):
        return type(v)(_number(m, x) for x in v)
    if isinstance(v, Value) or isinstance(v, torch.SymInt) and not isinstance(m.dim(v), int):
        raise EmberError("a tensor created from a dynamic size is not supported", hint="fix it with input_shapes")
    return m.dim(v) if isinstance(v, torch.SymInt) else v


@aten("full_like.default")
def _full_like(m, a):
    x, dt = a["self"], m.out_dtype()
    fill = m.graph.add_constant(np.asarray(a["fill_value"], dtype=_np(dt)), "fill")
    if x.is_static:
        return m.graph.add_constant(np.full(x.shape, a["fill_value"], dtype=_np(dt)), "fill")
    return m.emit1("expand", [fill, m.shape_tensor(m.out_shape())])


def _np(dtype: str) -> np.dtype:
    from ember.ir.dtypes import to_numpy

    return to_numpy(dtype)


# ---- reductions ------------------------------------------------------------------------


def _reduce(ember_op: str) -> Convert:
    def convert(m: Importer, a: dict[str, Any]) -> Value:
        x = m.cast(a["self"], m.out_dtype())
        dims = a.get("dim") or []
        axes = [dims] if isinstance(dims, int) else list(dims)
        return m.emit1(ember_op, [x], {"axes": axes, "keepdims": int(bool(a.get("keepdim", False)))})

    return convert


for _aten, _ember in {"mean": "reduce_mean", "sum": "reduce_sum", "amax": "reduce_max", "amin": "reduce_min"}.items():
    for _overload in ("dim", "dim_IntList", "default"):
        ATEN_OPS[f"aten.{_aten}.{_overload}"] = _reduce(_ember)


@aten("any.dim", "any.dims", "any.default")
def _any(m, a):
    as_float = {**a, "self": m.cast(a["self"], "f32")}
    return m.cast(_reduce("reduce_max")(m, as_float), "bool")


@aten("argmax.default", "argmin.default")
def _arg(m, a):
    if a["dim"] is None:
        raise EmberError("argmax/argmin over all elements is not supported", hint="pass dim=")
    op = "argmax" if m.node.target.__name__.startswith("argmax") else "argmin"
    return m.emit1(op, [a["self"]], {"axis": a["dim"], "keepdims": int(a["keepdim"])})


@aten("_softmax.default", "softmax.int", "_log_softmax.default", "log_softmax.int")
def _softmax(m, a):
    op = "log_softmax" if "log_softmax" in m.node.target.__name__ else "softmax"
    return m.emit1(op, [m.cast(a["self"], m.out_dtype())], {"axis": a["dim"]})


# ---- data movement ---------------------------------------------------------------------


@aten("view.default", "_unsafe_view.default", "reshape.default", "view_copy.default")
def _view(m, a):
    x = a["self"]
    target = [m.dim(d) for d in m.out_shape()]
    if all(isinstance(d, int) for d in target):
        return m.emit1("reshape", [x, m.int_array(target)], {"allowzero": int(0 in target)})
    spec = [
        d if isinstance(d, int) else (0 if i < x.rank and x.shape[i] == d and d != UNKNOWN else -1)
        for i, d in enumerate(target)
    ]
    shape = m.int_array(spec) if spec.count(-1) <= 1 else m.shape_tensor(m.out_shape())
    return m.emit1("reshape", [x, shape])


@aten("expand.default", "expand_copy.default")
def _expand(m, a):
    x = a["self"]
    target = [m.dim(d) for d in m.out_shape()]
    lead = len(target) - x.rank
    keep = [i >= lead and x.shape[i - lead] == d for i, d in enumerate(target)]
    if all(isinstance(d, int) or k for d, k in zip(target, keep)):
        spec = [1 if k and not isinstance(d, int) else d for d, k in zip(target, keep)]
        return m.emit1("expand", [x, m.int_array(spec)])
    return m.emit1("expand", [x, m.shape_tensor(m.out_shape())])


@aten("repeat.default")
def _repeat(m, a):
    x, reps = a["self"], m.const_ints(a["repeats"], "repeats")
    if len(reps) > x.rank:  # new leading axes, as torch adds them
        x = m.emit1("unsqueeze", [x], {"axes": list(range(len(reps) - x.rank))})
    return m.emit1("tile", [x, m.int_array(reps, "repeats")])


@aten("permute.default", "permute_copy.default")
def _permute(m, a):
    x = a["self"]
    return m.emit1("transpose", [x], {"perm": [d % x.rank for d in a["dims"]]})


@aten("t.default")
def _t(m, a):
    x = a["self"]
    return x if x.rank < 2 else m.emit1("transpose", [x], {"perm": [1, 0]})


@aten("unsqueeze.default", "unsqueeze_copy.default")
def _unsqueeze(m, a):
    return m.emit1("unsqueeze", [a["self"]], {"axes": [a["dim"]]})


@aten("squeeze.dim", "squeeze.dims", "squeeze.default", "squeeze_copy.dims")
def _squeeze(m, a):
    x = a["self"]
    dims = a.get("dim")
    axes = [i for i, d in enumerate(x.shape) if d == 1] if dims is None else [dims] if isinstance(dims, int) else dims
    axes = [i for i in axes if x.shape[i] == 1]  # torch leaves axes that are not 1 alone
    return x if not axes else m.emit1("squeeze", [x], {"axes": axes})


@aten("cat.default")
def _cat(m, a):
    dt = m.out_dtype()
    xs = [m.cast(x, dt) for x in a["tensors"] if not (x.rank == 1 and x.shape[0] == 0)]
    return m.emit1("concat", xs, {"axis": a["dim"]})


def _static_dim(x: Value, axis: int, what: str) -> int:
    d = x.shape[axis]
    if not isinstance(d, int):
        raise EmberError(f"{what} along dynamic axis {axis} of {list(x.shape)}", hint="export that axis static")
    return d


@aten("split_with_sizes.default", "split.Tensor", "split_with_sizes_copy.default")
def _split(m, a):
    x = a["self"]
    axis = a["dim"] % x.rank
    sizes = a["split_size"] if "split_size" in a else a["split_sizes"]
    if isinstance(sizes, int):
        n = _static_dim(x, axis, "splitting")
        sizes = [min(sizes, n - i) for i in range(0, n, sizes)]
    return m.emit("split", [x], {"axis": axis, "sizes": m.const_ints(sizes, "split sizes")})


@aten("unbind.int")
def _unbind(m, a):
    x = a["self"]
    axis = a["dim"] % x.rank
    parts = m.emit("split", [x], {"axis": axis, "sizes": [1] * _static_dim(x, axis, "unbinding")})
    return [m.emit1("squeeze", [p], {"axes": [axis]}) for p in parts]


@aten("select.int", "select_copy.int")
def _select(m, a):
    x = a["self"]
    index = m.graph.add_constant(np.asarray(a["index"], dtype=np.int64), "index")
    return m.emit1("gather", [x, index], {"axis": a["dim"] % x.rank})


@aten("flip.default")
def _flip(m, a):
    """Each flipped dim read backwards: a slice of step -1 (a bidirectional RNN's reverse pass)."""
    x = a["self"]
    for d in a["dims"]:
        bounds = [
            m.int_array([v], name) for v, name in ((-1, "starts"), (-(2**63), "ends"), (d, "axes"), (-1, "steps"))
        ]
        x = m.emit1("slice", [x, *bounds])
    return x


@aten("cumsum.default")
def _cumsum(m, a):
    x = m.cast(a["self"], m.out_dtype())
    return m.emit1("cumsum", [x], {"axis": a["dim"] % x.rank})


@aten("topk.default")
def _topk(m, a):
    attrs = {"k": a["k"], "axis": a["dim"], "largest": int(a["largest"])}
    return m.emit("topk", [a["self"]], attrs)


@aten("gather.default")
def _gather(m, a):
    return m.emit1("gather_elements", [a["self"], a["index"]], {"axis": a["dim"] % a["self"].rank})


@aten("slice.Tensor", "slice_copy.Tensor")
def _slice(m, a):
    x = a["self"]
    axis = a["dim"] % x.rank
    start, end, step = a["start"] or 0, a["end"], a["step"] or 1
    size = x.shape[axis]
    end = 2**63 - 1 if end is None else end
    if isinstance(size, int):
        start, end, step = slice(start, end, step).indices(size)
        if (start, end, step) == (0, size, 1):
            return x
    bounds = [m.int_array([b], n) for b, n in ((start, "starts"), (end, "ends"), (axis, "axes"), (step, "steps"))]
    return m.emit1("slice", [x, *bounds])


@aten("embedding.default")
def _embedding(m, a):
    return m.emit1("gather", [a["weight"], a["indices"]], {"axis": 0})


PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@aten("constant_pad_nd.default", "pad.default")
def _pad(m, a):
    x, pad = a["self"], m.const_ints(a["pad"], "padding")
    mode = PAD_MODES.get(a.get("mode") or "constant")
    if mode is None:
        raise EmberError(f"pad mode '{a['mode']}' is not supported", hint="use " + ", ".join(PAD_MODES))
    begin, end = [0] * x.rank, [0] * x.rank
    for i in range(len(pad) // 2):
        begin[x.rank - 1 - i], end[x.rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    return m.emit1("pad", [x], {"pads": begin + end, "mode": mode, "value": float(a["value"] or 0.0)})
