"""3-D (NCDHW) convolution, transposed convolution and pooling, as composites of the 2-D ops: the depth taps
become a loop over depth slices, so each slice runs through the 2-D kernels, passes and schedules. A 3x3x3
conv is three conv2ds over every output depth's input slices, summed; a 3-D pool reduces its depth window
elementwise first, then pools the 2-D windows once."""

from __future__ import annotations

import functools

import numpy as np

from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.graph import Node, Value
from ember.ir.ops.registry import decomposition, op, reference
from ember.ir.ops.shapes import fmt, is_static, pool_out

_TRIPLES = ("strides", "dilations")
_CONV_ATTRS = dict(strides=(1, 1, 1), pads=(0,) * 6, dilations=(1, 1, 1), group=1)
_POOL_ATTRS = dict(kernel=(1, 1, 1), strides=(1, 1, 1), pads=(0,) * 6, dilations=(1, 1, 1), ceil_mode=0)
DEPTH_FIRST = (0, 2, 1, 3, 4)  # NCDHW <-> NDCHW: depth slices of the second are batches of NCHW images


def _check(x: Value, a: dict, names: tuple[str, ...]) -> None:
    if x.rank != 5:
        raise EmberError(f"input must have rank 5 (NCDHW), got {fmt(x.shape)}")
    if not is_static(x.shape[1:]):
        raise EmberError(f"a 3-D layer needs static channel and spatial sizes, got {fmt(x.shape)}",
                         hint="pass --input-shape")  # fmt: skip
    for n in names:
        if len(a[n]) != 3 or min(a[n]) < 1:
            raise EmberError(f"'{n}' must be three positive ints, got {list(a[n])}")
    if len(a["pads"]) != 6 or min(a["pads"]) < 0:
        raise EmberError(f"'pads' must be six non-negative ints [begin d, h, w, end d, h, w], got {list(a['pads'])}")


def _out(shape, kernel, a: dict, ceil: bool = False) -> tuple:
    """The output's depth, height and width for an NCDHW `shape`."""
    p = a["pads"]
    return tuple(
        pool_out(shape[2 + i], kernel[i], a["strides"][i], p[i], p[i + 3], a["dilations"][i], ceil) for i in range(3)
    )


@op("conv3d", "x w b?", "3-D convolution: NCDHW input, OIDHW weights", tags=("composite",), **_CONV_ATTRS)
def conv3d(ins, a):
    x, w, b = (ins + [None])[:3]
    _check(x, a, _TRIPLES)
    g = a["group"]
    if w.rank != 5 or g < 1 or x.shape[1] != w.shape[1] * g or w.shape[0] % g:
        raise EmberError(f"input {fmt(x.shape)} and weight {fmt(w.shape)} disagree for group={g}")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise EmberError(f"bias {fmt(b.shape)} must be [{w.shape[0]}]")
    return (x.shape[0], w.shape[0], *_out(x.shape, w.shape[2:], a)), x.dtype


@op(
    "conv3d_transpose",
    "x w b?",
    "3-D transposed convolution (gradient of conv3d): NCDHW input, weights [C_in, C_out/group, kD, kH, kW]",
    tags=("composite",),
    output_padding=(0, 0, 0),
    **_CONV_ATTRS,
)
def conv3d_transpose(ins, a):
    x, w, b = (ins + [None])[:3]
    _check(x, a, _TRIPLES)
    g = a["group"]
    if w.rank != 5 or g < 1 or x.shape[1] != w.shape[0] or w.shape[0] % g:
        raise EmberError(f"input {fmt(x.shape)} and weight {fmt(w.shape)} disagree for group={g}")
    if b is not None and tuple(b.shape) != (w.shape[1] * g,):
        raise EmberError(f"bias {fmt(b.shape)} must be [{w.shape[1] * g}]")
    full = _transposed_extents(x.shape, w.shape, a)
    out = tuple(f - a["pads"][i] - a["pads"][i + 3] for i, f in enumerate(full))
    if min(out) < 1:
        raise EmberError(f"pads {list(a['pads'])} leave no output of the {list(full)} transposed convolution")
    return (x.shape[0], w.shape[1] * g, *out), x.dtype


def _transposed_extents(x_shape, w_shape, a: dict) -> tuple:
    """A transposed convolution's depth, height and width before its pads are cropped."""
    s, d, op = a["strides"], a["dilations"], a["output_padding"]
    return tuple(s[i] * (x_shape[2 + i] - 1) + d[i] * (w_shape[2 + i] - 1) + 1 + op[i] for i in range(3))


def _pool_type(ins, a):
    (x,) = ins
    _check(x, a, ("kernel", *_TRIPLES))
    return (*x.shape[:2], *_out(x.shape, a["kernel"], a, bool(a["ceil_mode"]))), x.dtype


max_pool3d = op("max_pool3d", "x", "3-D max pooling, NCDHW", tags=("composite",), **_POOL_ATTRS)(_pool_type)
avg_pool3d = op(
    "avg_pool3d", "x", "3-D average pooling, NCDHW", tags=("composite",), count_include_pad=0, **_POOL_ATTRS
)(_pool_type)


def _padded(x: np.ndarray, a: dict, kernel, out, fill) -> np.ndarray:
    """x padded by `pads`, and past them as far as the last (ceil-mode) window reaches."""
    p, widths = a["pads"], [(0, 0), (0, 0)]
    for i in range(3):
        reach = (out[i] - 1) * a["strides"][i] + a["dilations"][i] * (kernel[i] - 1) + 1
        widths.append((p[i], max(p[i + 3], reach - x.shape[2 + i] - p[i])))
    return np.pad(x, widths, constant_values=fill)


def _taps(xp: np.ndarray, a: dict, kernel, out):
    """Each window tap's view of padded `xp`: [N, C, OD, OH, OW]."""
    s, d = a["strides"], a["dilations"]
    for t in np.ndindex(*kernel):
        yield t, xp[(..., *(slice(t[i] * d[i], t[i] * d[i] + s[i] * (out[i] - 1) + 1, s[i]) for i in range(3)))]


@reference(conv3d)
def _conv3d(x, w, b, a):
    n, o, g = x.shape[0], w.shape[0], a["group"]
    out = _out(x.shape, w.shape[2:], a)
    xp = _padded(x.astype(np.float64), a, w.shape[2:], out, 0.0)
    y = np.zeros((n, g, o // g, *out))
    wg = w.astype(np.float64).reshape(g, o // g, w.shape[1], *w.shape[2:])
    for t, view in _taps(xp, a, w.shape[2:], out):
        y += np.einsum("ngcdhw,goc->ngodhw", view.reshape(n, g, -1, *out), wg[(..., *t)])
    y = y.reshape(n, o, *out)
    if b is not None:
        y += b.reshape(1, -1, 1, 1, 1)
    return y.astype(x.dtype)


@reference(conv3d_transpose)
def _conv3d_transpose(x, w, b, a):
    n, cin, g = x.shape[0], x.shape[1], a["group"]
    og = w.shape[1]
    full = _transposed_extents(x.shape, w.shape, a)
    y = np.zeros((n, g * og, *full))
    xg = x.astype(np.float64).reshape(n, g, cin // g, *x.shape[2:])
    wg = w.astype(np.float64).reshape(g, cin // g, og, *w.shape[2:])
    s, d = a["strides"], a["dilations"]
    for t in np.ndindex(*w.shape[2:]):
        contrib = np.einsum("ngcdhw,gco->ngodhw", xg, wg[(..., *t)]).reshape(n, g * og, *x.shape[2:])
        at = (slice(t[i] * d[i], t[i] * d[i] + s[i] * (x.shape[2 + i] - 1) + 1, s[i]) for i in range(3))
        y[(..., *at)] += contrib
    p = a["pads"]
    y = y[(..., *(slice(p[i], full[i] - p[i + 3]) for i in range(3)))]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1, 1)
    return np.ascontiguousarray(y, dtype=x.dtype)


def _lowest(dtype) -> float | int:
    return -np.inf if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min


@reference(max_pool3d)
def _max_pool3d(x, a):
    out = _out(x.shape, a["kernel"], a, bool(a["ceil_mode"]))
    views = [v for _, v in _taps(_padded(x, a, a["kernel"], out, _lowest(x.dtype)), a, a["kernel"], out)]
    return np.ascontiguousarray(np.maximum.reduce(views))


@reference(avg_pool3d)
def _avg_pool3d(x, a):
    out = _out(x.shape, a["kernel"], a, bool(a["ceil_mode"]))
    total = sum(v for _, v in _taps(_padded(x.astype(np.float64), a, a["kernel"], out, 0.0), a, a["kernel"], out))
    count = np.ones((1, 1, 1, 1, 1))
    for i in range(3):
        shape = [1] * 5
        shape[2 + i] = out[i]
        count = count * _window_counts(x.shape[2 + i], a, out[i], i).reshape(shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (total / count).astype(x.dtype)


def _window_counts(size: int, a: dict, out: int, axis: int = 0) -> np.ndarray:
    """How many of each output's window taps along `axis` average pooling counts: those inside the input, or with
    count_include_pad those inside the pads too (never the ceil-mode overhang past them)."""
    k, s, d, p0, p1 = a["kernel"][axis], a["strides"][axis], a["dilations"][axis], a["pads"][axis], a["pads"][axis + 3]
    lo, hi = (0, size + p0 + p1) if a["count_include_pad"] else (p0, p0 + size)
    pos = np.arange(out)[:, None] * s + np.arange(k)[None, :] * d
    return ((pos >= lo) & (pos < hi)).sum(axis=1).astype(np.float64)


def _depth_slices(x: Value, emit, a: dict, kernel: int, out: int, fill: float | int):
    """x [N, C, D, H, W] as NDCHW, padded in depth by `fill` (to the last ceil-mode window), and each depth tap's
    slice of it [N, OD, C, H, W]."""
    p, s, d = a["pads"], a["strides"][0], a["dilations"][0]
    reach = (out - 1) * s + d * (kernel - 1) + 1
    end = max(p[3], reach - x.shape[2] - p[0])
    xt = emit("transpose", x, perm=DEPTH_FIRST)
    if p[0] or end:
        xt = emit("pad", xt, pads=[0, p[0], 0, 0, 0, 0, end, 0, 0, 0], value=float(fill))
    if kernel == 1 and s == 1 and xt.shape[1] == out:
        return [xt]
    return [emit("slice", xt, *(np.array([v], np.int64) for v in (t * d, t * d + s * (out - 1) + 1, 1, s)))
            for t in range(kernel)]  # fmt: skip


def _images(v: Value, emit) -> Value:
    """[N, OD, C, H, W] -> [N * OD, C, H, W]."""
    return emit("reshape", v, np.array([-1, *v.shape[2:]], np.int64))


def _volume(v: Value, emit, depth: int) -> Value:
    """[N * OD, C, OH, OW] -> [N, C, OD, OH, OW]."""
    stacked = emit("reshape", v, np.array([-1, depth, *v.shape[1:]], np.int64))
    return emit("transpose", stacked, perm=DEPTH_FIRST)


def _plane_attrs(a: dict) -> dict:
    p = a["pads"]
    return {"strides": list(a["strides"][1:]), "dilations": list(a["dilations"][1:]), "pads": [p[1], p[2], p[4], p[5]]}


@decomposition(conv3d)
def _decompose_conv3d(node: Node, emit) -> Value:
    x, w, b = (node.inputs + [None])[:3]
    a, od = node.attrs, node.output.shape[2]
    y = None
    for t, xs in enumerate(_depth_slices(x, emit, a, w.shape[2], od, 0.0)):
        bias = [b] if b is not None and t == 0 else []
        yt = emit("conv2d", _images(xs, emit), _depth_tap(w, t, emit), *bias, group=a["group"], **_plane_attrs(a))
        y = yt if y is None else emit("add", y, yt)
    return _volume(y, emit, od)


def _bounds(start: int, end: int, axis: int) -> list[np.ndarray]:
    return [np.array([v], np.int64) for v in (start, end, axis)]


def _depth_tap(w: Value, t: int, emit):
    """The 2-D weights of depth tap `t` of 3-D weights [A, B, kD, kH, kW]."""
    return w.const[:, :, t] if w.is_const else emit("squeeze", emit("slice", w, *_bounds(t, t + 1, 2)), axes=[2])


def _combined(slices: list, op: str, emit) -> Value:
    return functools.reduce(lambda acc, s: emit(op, acc, s), slices)


@decomposition(conv3d_transpose)
def _decompose_conv3d_transpose(node: Node, emit) -> Value:
    """Each depth tap's 2-D transposed conv of every input depth slice, spread `stride` apart along depth and
    shifted by the tap, summed; then the depth pads cropped and the bias added."""
    x, w, b = (node.inputs + [None])[:3]
    a, depth = node.attrs, x.shape[2]
    s, d, p = a["strides"][0], a["dilations"][0], a["pads"]
    full = _transposed_extents(x.shape, w.shape, a)[0]
    images = _images(emit("transpose", x, perm=DEPTH_FIRST), emit)
    plane = {**_plane_attrs(a), "output_padding": list(a["output_padding"][1:]), "group": a["group"]}
    y = None
    for t in range(w.shape[2]):
        z = emit("conv2d_transpose", images, _depth_tap(w, t, emit), **plane)
        z = emit("reshape", z, np.array([-1, depth, *z.shape[1:]], np.int64))
        if s > 1:  # s - 1 zero slices after each: [N, D * s, O, H, W]
            spread = emit("pad", emit("unsqueeze", z, axes=[2]), pads=[0, 0, 0, 0, 0, 0, 0, 0, s - 1, 0, 0, 0])
            z = emit("reshape", spread, np.array([-1, depth * s, *z.shape[2:]], np.int64))
        length = min(z.shape[1], full - t * d)
        if length < z.shape[1]:
            z = emit("slice", z, *_bounds(0, length, 1))
        z = emit("pad", z, pads=[0, t * d, 0, 0, 0, 0, full - t * d - length, 0, 0, 0])
        y = z if y is None else emit("add", y, z)
    if p[0] or p[3]:
        y = emit("slice", y, *_bounds(p[0], full - p[3], 1))
    if b is not None:
        bias = b.const.reshape(1, 1, -1, 1, 1) if b.is_const else emit("reshape", b, np.array([1, 1, -1, 1, 1]))
        y = emit("add", y, bias)
    return emit("transpose", y, perm=DEPTH_FIRST)


@decomposition(max_pool3d)
def _decompose_max_pool3d(node: Node, emit) -> Value:
    x, a, od = node.inputs[0], node.attrs, node.output.shape[2]
    slices = _depth_slices(x, emit, a, a["kernel"][0], od, _lowest(dtypes.to_numpy(x.dtype)))
    window = _combined(slices, "max", emit)
    pooled = emit("max_pool2d", _images(window, emit), kernel=list(a["kernel"][1:]), ceil_mode=a["ceil_mode"],
                  **_plane_attrs(a))  # fmt: skip
    return _volume(pooled, emit, od)


@decomposition(avg_pool3d)
def _decompose_avg_pool3d(node: Node, emit) -> Value:
    x, a, od = node.inputs[0], node.attrs, node.output.shape[2]
    window = _combined(_depth_slices(x, emit, a, a["kernel"][0], od, 0.0), "add", emit)
    plane = {"kernel": list(a["kernel"][1:]), "ceil_mode": a["ceil_mode"], "count_include_pad": a["count_include_pad"]}
    pooled = emit("avg_pool2d", _images(window, emit), **plane, **_plane_attrs(a))
    stacked = emit("reshape", pooled, np.array([-1, od, *pooled.shape[1:]], np.int64))
    with np.errstate(divide="ignore"):  # a window wholly in the pads averages nothing: NaN, as the reference
        scale = (1.0 / _window_counts(x.shape[2], a, od)).reshape(1, od, 1, 1, 1).astype(dtypes.to_numpy(x.dtype))
    return emit("transpose", emit("mul", stacked, scale), perm=DEPTH_FIRST)
