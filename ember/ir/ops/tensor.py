"""Data-movement and shape ops: reshape, transpose, concat, slice, gather, pad, resize, ..."""

from __future__ import annotations

import numpy as np

from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.ops.registry import Attr, op, reference
from ember.ir.ops.shapes import UNKNOWN, fmt, norm_axis, prod


def _const_ints(v, what: str) -> list[int] | None:
    """The integer contents of a constant operand, or None while it is computed at run time (the
    result's dims are then unknown until fold-constants resolves it)."""
    if v is None:
        raise EmberError(f"{what} is missing")
    if v.const is None:
        if v.rank != 1 or not isinstance(v.shape[0], int):
            raise EmberError(f"{what} must be a 1-D tensor of static length, got {fmt(v.shape)}")
        return None
    return [int(i) for i in np.asarray(v.const).reshape(-1)]


def reshape_target(in_shape, spec: list[int], allowzero: int) -> tuple:
    out = []
    for i, s in enumerate(spec):
        if s == 0 and not allowzero:
            if i >= len(in_shape):
                raise EmberError(f"shape {spec} copies dim {i} from {fmt(in_shape)}, which has none")
            out.append(in_shape[i])
        else:
            out.append(s)
    if out.count(-1) > 1:
        raise EmberError(f"shape {spec} has more than one -1")
    if -1 in out:
        known = prod([d for d in out if d != -1])
        total = prod(in_shape)
        if isinstance(total, int) and isinstance(known, int):
            if known == 0 or total % known:
                raise EmberError(f"cannot reshape {fmt(in_shape)} to {spec}")
            out[out.index(-1)] = total // known
        else:
            out[out.index(-1)] = UNKNOWN
    total, new = prod(in_shape), prod(out)
    if isinstance(total, int) and isinstance(new, int) and total != new:
        raise EmberError(f"cannot reshape {fmt(in_shape)} ({total} elements) to {fmt(out)} ({new} elements)")
    return tuple(out)


@op("reshape", "x shape", "reshape to `shape` (0 copies a dim unless allowzero, -1 is inferred)", allowzero=0)
def reshape(ins, a):
    x, s = ins
    spec = _const_ints(s, "reshape's shape")
    if spec is None:
        return (UNKNOWN,) * s.shape[0], x.dtype
    return reshape_target(x.shape, spec, a["allowzero"]), x.dtype


@reference(reshape)
def _reshape(x, s, a):
    return x.reshape(reshape_target(x.shape, [int(i) for i in s], a["allowzero"]))


@op("flatten", "x", "collapse to 2-D: dims before `axis` and dims from it", axis=1)
def flatten(ins, a):
    x = ins[0]
    ax = _flatten_axis(a["axis"], x.rank)
    return (prod(x.shape[:ax]), prod(x.shape[ax:])), x.dtype


def _flatten_axis(axis: int, rank: int) -> int:
    """Flatten's axis lies in [-rank, rank]; a negative one counts from the end (-1 keeps the last dim apart)."""
    if not -rank <= axis <= rank:
        raise EmberError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


reference(flatten)(lambda x, a: x.reshape(int(np.prod(x.shape[: _flatten_axis(a["axis"], x.ndim)])), -1))


@op("transpose", "x", "permute axes", perm=Attr("ints"))
def transpose(ins, a):
    x = ins[0]
    if sorted(a["perm"]) != list(range(x.rank)):
        raise EmberError(f"perm {list(a['perm'])} is not a permutation of {x.rank} axes")
    return tuple(x.shape[p] for p in a["perm"]), x.dtype


reference(transpose)(lambda x, a: np.transpose(x, a["perm"]).copy())  # copy() keeps 0-d arrays 0-d


@op("squeeze", "x", "remove size-1 axes", axes=Attr("ints"))
def squeeze(ins, a):
    x = ins[0]
    axes = {norm_axis(i, x.rank) for i in a["axes"]}
    for i in axes:
        if isinstance(x.shape[i], int) and x.shape[i] != 1:
            raise EmberError(f"cannot squeeze axis {i} of {fmt(x.shape)}: size is not 1")
    return tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype


reference(squeeze)(lambda x, a: np.squeeze(x, axis=tuple(i % x.ndim for i in a["axes"])))


@op("unsqueeze", "x", "insert size-1 axes at the given output positions", axes=Attr("ints"))
def unsqueeze(ins, a):
    x = ins[0]
    rank = x.rank + len(a["axes"])
    axes = sorted(norm_axis(i, rank) for i in a["axes"])
    if len(set(axes)) != len(axes):
        raise EmberError(f"repeated axis in {list(a['axes'])}")
    out, it = [], iter(x.shape)
    for i in range(rank):
        out.append(1 if i in axes else next(it))
    return tuple(out), x.dtype


reference(unsqueeze)(lambda x, a: np.expand_dims(x, tuple(i % (x.ndim + len(a["axes"])) for i in a["axes"])))


@op("concat", "xs*", "join along `axis`", axis=Attr("int"))
def concat(ins, a):
    if not ins:
        raise EmberError("needs at least one operand")
    first = ins[0]
    ax = norm_axis(a["axis"], first.rank)
    total = 0
    for v in ins:
        if v.rank != first.rank or v.dtype != first.dtype:
            raise EmberError(f"operands {fmt(first.shape)}:{first.dtype} and {fmt(v.shape)}:{v.dtype} differ")
        for i, (d0, d1) in enumerate(zip(first.shape, v.shape)):
            if i != ax and isinstance(d0, int) and isinstance(d1, int) and d0 != d1:
                raise EmberError(f"operands {fmt(first.shape)} and {fmt(v.shape)} differ off axis {ax}")
        total = total + v.shape[ax] if isinstance(total, int) and isinstance(v.shape[ax], int) else UNKNOWN
    # Operands agree off the axis, so a dim one of them knows (static or named) is the result's.
    known = [next((v.shape[i] for v in ins if v.shape[i] != UNKNOWN), UNKNOWN) for i in range(first.rank)]
    return tuple(total if i == ax else d for i, d in enumerate(known)), first.dtype


reference(concat)(lambda *xs: np.concatenate(xs[:-1], axis=xs[-1]["axis"]))


@op("split", "x", "split along `axis` into pieces of the given sizes", axis=0, sizes=Attr("ints"))
def split(ins, a):
    x = ins[0]
    ax = norm_axis(a["axis"], x.rank)
    if isinstance(x.shape[ax], int) and sum(a["sizes"]) != x.shape[ax]:
        raise EmberError(f"sizes {list(a['sizes'])} do not add up to dim {ax} of {fmt(x.shape)}")
    return [(tuple(s if i == ax else d for i, d in enumerate(x.shape)), x.dtype) for s in a["sizes"]]


reference(split)(lambda x, a: np.split(x, np.cumsum(a["sizes"])[:-1], axis=a["axis"]))


def slice_params(shape, starts, ends, axes, steps):
    """Clamp ONNX-style slice bounds to python slices per axis."""
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else [norm_axis(x, rank) for x in axes]
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise EmberError("starts, ends, axes and steps must have one entry per sliced axis")
    slices = [slice(None)] * rank
    for ax, s, e, st in zip(axes, starts, ends, steps):
        if st == 0:
            raise EmberError("slice step must not be 0")
        slices[ax] = slice(s, e, st)
    return slices


def _sliced_len(n, sl: slice):
    return len(range(*sl.indices(n))) if isinstance(n, int) else UNKNOWN


@op("slice", "x starts ends axes? steps?", "ONNX-style slice; bounds are i64 operands")
def slice_(ins, a):
    x, starts, ends, axes, steps = (ins + [None, None])[:5]
    bounds = [
        _const_ints(starts, "slice starts"),
        _const_ints(ends, "slice ends"),
        None if axes is None else _const_ints(axes, "slice axes"),
        None if steps is None else _const_ints(steps, "slice steps"),
    ]
    if any(b is None for b, v in zip(bounds, (starts, ends, axes, steps)) if v is not None):
        return (UNKNOWN,) * x.rank, x.dtype
    sl = slice_params(x.shape, *bounds)
    return tuple(_sliced_len(n, s) for n, s in zip(x.shape, sl)), x.dtype


@reference(slice_)
def _slice(x, starts, ends, axes, steps, a):
    ints = lambda v: None if v is None else [int(i) for i in np.asarray(v).reshape(-1)]  # noqa: E731
    return np.ascontiguousarray(x[tuple(slice_params(x.shape, ints(starts), ints(ends), ints(axes), ints(steps)))])


@op("gather", "x indices", "take entries along `axis` (negative indices count from the end)", axis=0)
def gather(ins, a):
    x, idx = ins
    ax = norm_axis(a["axis"], x.rank)
    if idx.dtype not in ("i32", "i64"):
        raise EmberError(f"indices must be i32 or i64, got {idx.dtype}")
    return (*x.shape[:ax], *idx.shape, *x.shape[ax + 1 :]), x.dtype


reference(gather)(lambda x, i, a: np.take(x, np.where(i < 0, i + x.shape[a["axis"]], i), axis=a["axis"]))


@op("gather_elements", "x indices", "x's entry at each index along `axis`, elsewhere at the index's place", axis=0)
def gather_elements(ins, a):
    x, idx = ins
    norm_axis(a["axis"], x.rank)  # in range
    if idx.dtype not in ("i32", "i64"):
        raise EmberError(f"indices must be i32 or i64, got {idx.dtype}")
    if idx.rank != x.rank:
        raise EmberError(f"indices must have x's rank {x.rank}, got rank {idx.rank}")
    return idx.shape, x.dtype


@reference(gather_elements)
def _gather_elements(x, i, a):
    ax = a["axis"] % x.ndim
    return np.take_along_axis(x, np.where(i < 0, i + x.shape[ax], i), axis=ax)


@op(
    "one_hot",
    "indices",
    "`on` where an axis position equals the index (negative ones count from the end), else `off`",
    depth=Attr("int"),
    axis=-1,
    on=1.0,
    off=0.0,
    dtype=Attr("dtype", "f32"),
)
def one_hot(ins, a):
    i = ins[0]
    if i.dtype not in ("i32", "i64"):
        raise EmberError(f"indices must be i32 or i64, got {i.dtype}")
    ax = norm_axis(a["axis"], i.rank + 1)
    return (*i.shape[:ax], a["depth"], *i.shape[ax:]), a["dtype"]


@reference(one_hot)
def _one_hot(i, a):
    depth = a["depth"]
    hot = np.arange(depth) == np.where(i < 0, i + depth, i)[..., None]
    y = np.where(hot, a["on"], a["off"]).astype(dtypes.to_numpy(a["dtype"]))
    return np.ascontiguousarray(np.moveaxis(y, -1, a["axis"] % (i.ndim + 1)))


@op("shape", "x", "the shape of x as i64 (dims start..end)", start=0, end=2**31 - 1)
def shape(ins, a):
    x = ins[0]
    return (len(range(*slice(a["start"], a["end"]).indices(x.rank))),), "i64"


reference(shape)(lambda x, a: np.array(x.shape[a["start"] : a["end"]], dtype=np.int64))


@op("expand", "x shape", "broadcast x to `shape` (numpy rules)")
def expand(ins, a):
    from ember.ir.ops.shapes import broadcast

    x, s = ins
    spec = _const_ints(s, "expand's shape")
    if spec is None:
        return (UNKNOWN,) * max(s.shape[0], x.rank), x.dtype
    return broadcast(x.shape, tuple(spec)), x.dtype


reference(expand)(lambda x, s, a: x * np.ones([int(i) for i in s], dtype=x.dtype))


@op("constant_of_shape", "shape", "a tensor of `shape` filled with `value`", value=0.0, dtype="f32")
def constant_of_shape(ins, a):
    spec = _const_ints(ins[0], "constant_of_shape's shape")
    return (tuple(spec) if spec is not None else (UNKNOWN,) * ins[0].shape[0]), a["dtype"]


@reference(constant_of_shape)
def _constant_of_shape(s, a):
    from ember.ir.dtypes import to_numpy

    return np.full([int(i) for i in s], a["value"], dtype=to_numpy(a["dtype"]))


@op("range", "start limit delta", "[start, start+delta, ...) up to limit")
def range_(ins, a):
    if any(v.const is None for v in ins):
        return (UNKNOWN,), ins[0].dtype
    s, lim, d = (np.asarray(v.const).item() for v in ins)
    return (max(int(np.ceil((lim - s) / d)), 0),), ins[0].dtype


reference(range_)(lambda s, lim, d, a: np.arange(s.item(), lim.item(), d.item(), dtype=s.dtype))


@op("tile", "x repeats", "repeat x along each axis")
def tile(ins, a):
    x, r = ins
    reps = _const_ints(r, "tile's repeats")
    if reps is None:
        return (UNKNOWN,) * x.rank, x.dtype
    if len(reps) != x.rank:
        raise EmberError(f"repeats {reps} must have one entry per axis of {fmt(x.shape)}")
    return tuple(d * k if isinstance(d, int) else UNKNOWN for d, k in zip(x.shape, reps)), x.dtype


reference(tile)(lambda x, r, a: np.tile(x, [int(i) for i in r]))


@op("pad", "x", "pad with `pads` = [begin_0.., end_0..]", pads=Attr("ints"), mode="constant", value=0.0)
def pad(ins, a):
    x = ins[0]
    p = a["pads"]
    if len(p) != 2 * x.rank:
        raise EmberError(f"pads {list(p)} must have 2 entries per axis of {fmt(x.shape)}")
    if a["mode"] not in ("constant", "reflect", "edge", "wrap"):
        raise EmberError(f"unknown pad mode '{a['mode']}'", hint="use constant, reflect, edge or wrap")
    return tuple(d + p[i] + p[i + x.rank] if isinstance(d, int) else UNKNOWN for i, d in enumerate(x.shape)), x.dtype


@reference(pad)
def _pad(x, a):
    p, r = a["pads"], x.ndim
    widths = [(p[i], p[i + r]) for i in range(r)]
    crop = tuple(slice(-b if b < 0 else 0, x.shape[i] + e if e < 0 else None) for i, (b, e) in enumerate(widths))
    x = x[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in widths]
    if a["mode"] == "constant":
        return np.pad(x, widths, constant_values=np.asarray(a["value"]).astype(x.dtype))
    return np.pad(x, widths, mode=a["mode"])


@op(
    "resize2d",
    "x",
    "resize the two trailing axes of NCHW x to `sizes`",
    sizes=Attr("ints"),
    mode="nearest",
    coordinate_transformation_mode="half_pixel",
    nearest_mode="round_prefer_floor",
    cubic_coeff_a=-0.75,
)
def resize2d(ins, a):
    x = ins[0]
    if x.rank != 4 or len(a["sizes"]) != 2:
        raise EmberError(f"expects a rank-4 input and two sizes, got {fmt(x.shape)} and {list(a['sizes'])}")
    if a["mode"] not in ("nearest", "linear", "cubic"):
        raise EmberError(f"unknown resize mode '{a['mode']}'")
    return (*x.shape[:2], *a["sizes"]), x.dtype


def _source_coords(out_n: int, in_n: int, mode: str) -> np.ndarray:
    o = np.arange(out_n, dtype=np.float64)
    scale = out_n / in_n
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if out_n > 1 else np.zeros_like(o)
    if mode == "align_corners":
        return o * (in_n - 1) / (out_n - 1) if out_n > 1 else np.zeros_like(o)
    if mode == "asymmetric":
        return o / scale
    raise EmberError(f"unsupported coordinate_transformation_mode '{mode}'")


_NEAREST = {
    "round_prefer_floor": lambda c: np.ceil(c - 0.5),
    "round_prefer_ceil": lambda c: np.floor(c + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}


def _resize_axis(x: np.ndarray, axis: int, out_n: int, a) -> np.ndarray:
    in_n = x.shape[axis]
    c = _source_coords(out_n, in_n, a["coordinate_transformation_mode"])
    if a["mode"] == "nearest":
        idx = np.clip(_NEAREST[a["nearest_mode"]](c).astype(np.int64), 0, in_n - 1)
        return np.take(x, idx, axis=axis)
    if a["mode"] == "linear":
        c = np.clip(c, 0, in_n - 1)
        lo = np.floor(c).astype(np.int64)
        hi = np.minimum(lo + 1, in_n - 1)
        w = (c - lo).reshape([-1 if i == axis else 1 for i in range(x.ndim)])
        return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w
    raise EmberError("the reference interpreter supports nearest and linear resize only")


@reference(resize2d)
def _resize2d(x, a):
    y = x.astype(np.float64)
    for axis, n in zip((2, 3), a["sizes"]):
        y = _resize_axis(y, axis, n, a)
    return y.astype(x.dtype)
