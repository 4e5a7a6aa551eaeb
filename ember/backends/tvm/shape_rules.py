"""Lowering rules for the ops that move data without arithmetic: reshapes, transposes, slices, gathers, pads,
resizes and the shape-producing ops. Split from rules.py, which keeps the Lowering state and the compute ops."""

from __future__ import annotations

import numpy as np
from tvm import relax, tirx
from tvm.relax import op as R

from ember.backends.tvm.rules import _shape, _shape_of, rule
from ember.errors import EmberError
from ember.ir import dtypes


@rule("reshape", "flatten", "squeeze", "unsqueeze")
def _reshape(L, n, a):
    return R.reshape(a[0], _shape(n))


@rule("expand")
def _expand(L, n, a):
    return R.broadcast_to(a[0], _shape(n))


@rule("constant_of_shape")
def _constant_of_shape(L, n, a):
    dt = n.attrs["dtype"]
    return R.full(_shape(n), L.scalar(n.attrs["value"], dt), dtypes.to_tvm(dt))


@rule("transpose")
def _transpose(L, n, a):
    return R.permute_dims(a[0], list(n.attrs["perm"]))


@rule("split")
def _split(L, n, a):
    if len(n.outputs) == 1:  # R.split into one part gives a tensor, not a tuple
        return [a[0]]
    cuts = np.cumsum(n.attrs["sizes"])[:-1].tolist()
    parts = L.bb.emit(R.split(a[0], [int(c) for c in cuts] or 1, axis=n.attrs["axis"]))
    return [relax.TupleGetItem(parts, i) for i in range(len(n.outputs))]


@rule("topk")
def _topk(L, n, a):
    at = n.attrs
    both = L.bb.emit(
        R.topk(a[0], at["k"], axis=at["axis"], ret_type="both", largest=bool(at["largest"]), dtype="int64")
    )
    return [relax.TupleGetItem(both, i) for i in range(2)]


@rule("slice")
def _slice(L, n, a):
    from ember.ir.ops.tensor import slice_params

    x = n.inputs[0]
    ints = lambda v: None if v is None else [int(i) for i in np.asarray(v.const).reshape(-1)]  # noqa: E731
    for v in n.inputs[1:]:
        if v is not None and not v.is_const:
            raise EmberError("slice bounds must be constants to lower", node=n.name, op=n.op)
    extra = n.inputs[3:] + [None] * (5 - len(n.inputs))
    slices = slice_params(_shape_of(x, n), ints(n.inputs[1]), ints(n.inputs[2]), ints(extra[0]), ints(extra[1]))
    y = a[0]
    for axis, sl in enumerate(slices):
        start, stop, step = sl.indices(x.shape[axis])
        if (start, stop, step) == (0, x.shape[axis], 1):
            continue
        idx = np.arange(start, stop, step, dtype=np.int64)
        if step > 0 and len(idx):
            y = R.strided_slice(y, [axis], [start], [int(idx[-1]) + 1], [step])
        else:
            y = R.take(y, L.const(idx), axis=axis)
    return y


@rule("gather")
def _gather(L, n, a):
    x, idx = n.inputs
    axis = n.attrs["axis"] % x.rank
    if idx.is_const:
        norm = np.where(idx.const < 0, idx.const + x.shape[axis], idx.const).astype(np.int64)
        return R.take(a[0], L.const(norm), axis=axis)
    return R.take(a[0], _in_range(L, a[1], x.shape[axis], idx.dtype), axis=axis)


@rule("gather_elements")
def _gather_elements(L, n, a):
    x, idx = n.inputs
    axis = n.attrs["axis"] % x.rank
    return R.gather_elements(a[0], _in_range(L, a[1], x.shape[axis], idx.dtype), axis=axis)


@rule("one_hot")
def _one_hot(L, n, a):
    at, idx = n.attrs, n.inputs[0]
    wrapped = _from_end(L, a[0], L.scalar(at["depth"], idx.dtype), idx.dtype)  # out of range stays all off
    dt = dtypes.to_tvm(at["dtype"])
    on, off = (tirx.const(at[k], dt) for k in ("on", "off"))
    return R.one_hot(wrapped, on, off, at["depth"], axis=at["axis"])


SCATTER_REDUCTIONS = {"none": "update", "add": "add", "mul": "mul", "max": "max", "min": "min"}


@rule("scatter_elements")
def _scatter_elements(L, n, a):
    x, idx = n.inputs[:2]
    axis = n.attrs["axis"] % x.rank
    fixed = _in_range(L, a[1], x.shape[axis], idx.dtype)
    return R.scatter_elements(a[0], fixed, a[2], axis=axis, reduction=SCATTER_REDUCTIONS[n.attrs["reduction"]])


@rule("scatter_nd", "gather_nd")
def _index_tuples(L, n, a):
    x, idx = n.inputs[:2]
    batch = n.attrs.get("batch_dims", 0)
    dims = L.const(np.array(x.shape[batch : batch + idx.shape[-1]], dtypes.to_numpy(idx.dtype)))
    fixed = _from_end(L, a[1], dims, idx.dtype)
    if n.op == "gather_nd":
        return R.gather_nd(a[0], fixed, batch_dims=batch)
    return R.scatter_nd(a[0], fixed, a[2], reduction=SCATTER_REDUCTIONS[n.attrs["reduction"]])


def _in_range(L, index, size: int, dtype: str):
    """Run-time indices into an axis of `size`: negative ones count from the end, and an index out of range
    reads the edge, never past it (ONNX leaves it undefined; TVM would read out of bounds)."""
    return R.clip(_from_end(L, index, L.scalar(size, dtype), dtype), 0, size - 1)


def _from_end(L, index, size, dtype: str):
    """Run-time indices with the negative ones counted from the end of an axis of `size` (a scalar, or one size
    per index position)."""
    return R.where(R.less(index, L.scalar(0, dtype)), R.add(index, size), index)


@rule("shape")
def _shape_rule(L, n, a):
    return L.const(np.array(_shape_of(n.inputs[0], n)[n.attrs["start"] : n.attrs["end"]], dtype=np.int64))


@rule("range")
def _range(L, n, a):
    if not all(v.is_const for v in n.inputs):
        raise EmberError("range bounds must be constants to lower", node=n.name, op=n.op)
    s, lim, d = (v.const.item() for v in n.inputs)
    return L.const(np.arange(s, lim, d, dtype=n.inputs[0].const.dtype))


@rule("tile")
def _tile(L, n, a):
    if not n.inputs[1].is_const:
        raise EmberError("tile repeats must be constants to lower", node=n.name, op=n.op)
    return R.tile(a[0], [int(i) for i in n.inputs[1].const.reshape(-1)])


@rule("pad")
def _pad(L, n, a):
    at = n.attrs
    if min(at["pads"]) < 0:
        raise EmberError("negative pads are not supported by the TVM lowering", node=n.name, op=n.op)
    x, r = n.inputs[0], n.inputs[0].rank
    width = [v for i in range(r) for v in (at["pads"][i], at["pads"][i + r])]
    # TVM's names; a mode it does not know pads with the constant, silently (0.27's legalization)
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[at["mode"]]
    reach = {"reflect": 1, "wrap": 0}.get(at["mode"])  # TVM's index formula holds for pads up to size - reach
    if reach is not None and any(  # a named dim's size is not known here: its pads go unchecked
        isinstance(d, int) and max(at["pads"][i], at["pads"][i + r]) > d - reach for i, d in enumerate(x.shape)
    ):
        msg = f"{at['mode']} pads {list(at['pads'])} reach past the input {list(x.shape)}"
        raise EmberError(msg, node=n.name, op=n.op)
    return R.nn.pad(a[0], width, pad_mode=mode, pad_value=at["value"])


@rule("resize2d")
def _resize2d(L, n, a):
    at = n.attrs
    method = {"nearest": "nearest_neighbor", "linear": "linear", "cubic": "cubic"}[at["mode"]]
    rounding = (
        {
            "round_prefer_floor": "round_prefer_floor",
            "round_prefer_ceil": "round_prefer_ceil",
            "floor": "floor",
            "ceil": "ceil",
        }[at["nearest_mode"]]
        if method == "nearest_neighbor"
        else ""
    )
    return R.image.resize2d(
        a[0],
        tuple(at["sizes"]),
        roi=(0.0, 0.0, 0.0, 0.0),
        method=method,
        coordinate_transformation_mode=at["coordinate_transformation_mode"],
        rounding_method=rounding,
        cubic_alpha=at["cubic_coeff_a"],
    )
