"""Neural-network ops on NCHW tensors: convolution, pooling, normalization, dense, softmax."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ember.errors import EmberError
from ember.ir.ops.registry import Attr, op, reference
from ember.ir.ops.shapes import UNKNOWN, fmt, norm_axis, pool_out

_CONV_ATTRS = dict(strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1)
_POOL_ATTRS = dict(kernel=(1, 1), strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), ceil_mode=0)
LAYOUTS = ("NCHW", "NHWC")
TO_NHWC, TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)
OIHW_TO_HWIO, HWIO_TO_OIHW = (2, 3, 1, 0), (3, 2, 0, 1)


def _layout(a: dict) -> str:
    if a["layout"] not in LAYOUTS:
        raise EmberError(f"layout must be one of {', '.join(LAYOUTS)}, got '{a['layout']}'")
    return a["layout"]


def _permuted(shape, perm) -> tuple:
    return tuple(shape[p] for p in perm)


class _View:
    """A value's shape seen through a permutation (type inference of NHWC ops reuses the NCHW rules)."""

    def __init__(self, v, perm):
        self.shape, self.dtype, self.rank, self.name = _permuted(v.shape, perm), v.dtype, v.rank, v.name


def nchw_reference(fn):
    """Run an NCHW reference on NHWC arrays (input, and HWIO weights when given) when `layout` says so."""

    def ref(x, *rest):
        a = rest[-1]
        if a["layout"] == "NCHW":
            return fn(x, *rest)
        w = rest[0] if len(rest) > 1 else None
        args = [x.transpose(TO_NCHW)]
        if w is not None:
            args.append(w.transpose(HWIO_TO_OIHW))
        args += list(rest[1 if w is not None else 0 : -1]) + [{**a, "layout": "NCHW"}]
        return np.ascontiguousarray(fn(*args).transpose(TO_NHWC))

    return ref


def _rank(v, r: int, what: str) -> None:
    if v.rank != r:
        raise EmberError(f"{what} must have rank {r}, got {fmt(v.shape)}")


def _check_pair_attrs(a: dict, names=("strides", "dilations")) -> None:
    for n in names:
        if len(a[n]) != 2 or min(a[n]) < 1:
            raise EmberError(f"'{n}' must be two positive ints, got {list(a[n])}")
    if len(a["pads"]) != 4 or min(a["pads"]) < 0:
        raise EmberError(f"'pads' must be four non-negative ints [top, left, bottom, right], got {list(a['pads'])}")


@op(
    "conv2d",
    "x w b?",
    "2-D convolution: NCHW input with OIHW weights, or NHWC input with HWIO weights",
    tags=("conv",),
    **_CONV_ATTRS,
    layout="NCHW",
)
def conv2d(ins, a):
    x, w, b = (ins + [None])[:3]
    if _layout(a) == "NHWC":
        _rank(x, 4, "input"), _rank(w, 4, "weight")
        shape, dtype = conv2d.infer([_View(x, TO_NCHW), _View(w, HWIO_TO_OIHW), b], {**a, "layout": "NCHW"})
        return _permuted(shape, TO_NHWC), dtype
    _rank(x, 4, "input"), _rank(w, 4, "weight")
    _check_pair_attrs(a)
    g = a["group"]
    if g < 1 or (isinstance(x.shape[1], int) and x.shape[1] != w.shape[1] * g) or w.shape[0] % g:
        raise EmberError(f"input {fmt(x.shape)} and weight {fmt(w.shape)} disagree for group={g}")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise EmberError(f"bias {fmt(b.shape)} must be [{w.shape[0]}]")
    (pt, pl, pb, pr), (sh, sw), (dh, dw) = a["pads"], a["strides"], a["dilations"]
    oh = pool_out(x.shape[2], w.shape[2], sh, pt, pb, dh)
    ow = pool_out(x.shape[3], w.shape[3], sw, pl, pr, dw)
    return (x.shape[0], w.shape[0], oh, ow), x.dtype


def _windows(x, kh, kw, a, fill=0.0, extra=(0, 0)):
    """Strided, dilated sliding windows of a padded NCHW array: [N, C, OH, OW, kh, kw]."""
    (pt, pl, pb, pr), (sh, sw), (dh, dw) = a["pads"], a["strides"], a["dilations"]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb + extra[0]), (pl, pr + extra[1])), constant_values=fill)
    win = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw]


@reference(conv2d)
@nchw_reference
def _conv2d(x, w, b, a):
    n, c = x.shape[:2]
    o, cg, kh, kw = w.shape
    g = a["group"]
    win = _windows(x, kh, kw, a)
    oh, ow = win.shape[2:4]
    win = win.reshape(n, g, cg, oh, ow, kh, kw)
    wg = w.reshape(g, o // g, cg, kh, kw)
    if g == 1:
        y = np.tensordot(win[:, 0], wg[0], axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    else:
        y = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(n, o, oh, ow)
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y, dtype=x.dtype)


@op(
    "conv2d_transpose",
    "x w b?",
    "2-D transposed convolution (gradient of conv2d), weights [C_in, C_out/group, kH, kW]",
    tags=("conv",),
    output_padding=(0, 0),
    **_CONV_ATTRS,
)
def conv2d_transpose(ins, a):
    x, w, b = (ins + [None])[:3]
    _rank(x, 4, "input"), _rank(w, 4, "weight")
    _check_pair_attrs(a)
    g = a["group"]
    if isinstance(x.shape[1], int) and x.shape[1] != w.shape[0]:
        raise EmberError(f"input {fmt(x.shape)} and weight {fmt(w.shape)} disagree")
    out = []
    for i in range(2):
        size = x.shape[2 + i]
        if not isinstance(size, int):
            out.append(UNKNOWN)
            continue
        s, d, k = a["strides"][i], a["dilations"][i], w.shape[2 + i]
        out.append(s * (size - 1) + a["output_padding"][i] + d * (k - 1) + 1 - a["pads"][i] - a["pads"][i + 2])
    return (x.shape[0], w.shape[1] * g, *out), x.dtype


@reference(conv2d_transpose)
def _conv2d_transpose(x, w, b, a):
    n, cin, h, wd = x.shape
    _, og, kh, kw = w.shape
    g = a["group"]
    (sh, sw), (dh, dw) = a["strides"], a["dilations"]
    full_h = sh * (h - 1) + dh * (kh - 1) + 1 + a["output_padding"][0]
    full_w = sw * (wd - 1) + dw * (kw - 1) + 1 + a["output_padding"][1]
    y = np.zeros((n, og * g, full_h, full_w), dtype=np.float64)
    xg = x.reshape(n, g, cin // g, h, wd)
    wg = w.reshape(g, cin // g, og, kh, kw)
    for i in range(kh):
        for j in range(kw):
            contrib = np.einsum("ngchw,gco->ngohw", xg, wg[:, :, :, i, j]).reshape(n, og * g, h, wd)
            y[:, :, i * dh : i * dh + sh * (h - 1) + 1 : sh, j * dw : j * dw + sw * (wd - 1) + 1 : sw] += contrib
    pt, pl, pb, pr = a["pads"]
    y = y[:, :, pt : full_h - pb, pl : full_w - pr]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y, dtype=x.dtype)


def _pool_infer(ins, a):
    (x,) = ins
    _rank(x, 4, "input")
    if _layout(a) == "NHWC":
        shape, dtype = _pool_infer([_View(x, TO_NCHW)], {**a, "layout": "NCHW"})
        return _permuted(shape, TO_NHWC), dtype
    _check_pair_attrs(a, ("kernel", "strides", "dilations"))
    (kh, kw), (pt, pl, pb, pr), (sh, sw), (dh, dw) = a["kernel"], a["pads"], a["strides"], a["dilations"]
    c = bool(a["ceil_mode"])
    return (
        *x.shape[:2],
        pool_out(x.shape[2], kh, sh, pt, pb, dh, c),
        pool_out(x.shape[3], kw, sw, pl, pr, dw, c),
    ), x.dtype


def _ceil_extra(x, a, oh, ow):
    (kh, kw), (pt, pl, pb, pr), (sh, sw), (dh, dw) = a["kernel"], a["pads"], a["strides"], a["dilations"]
    need_h = (oh - 1) * sh + dh * (kh - 1) + 1 - (x.shape[2] + pt + pb)
    need_w = (ow - 1) * sw + dw * (kw - 1) + 1 - (x.shape[3] + pl + pr)
    return max(need_h, 0), max(need_w, 0)


max_pool2d = op("max_pool2d", "x", "2-D max pooling, NCHW or NHWC", tags=("pool",), **_POOL_ATTRS, layout="NCHW")(
    _pool_infer
)
avg_pool2d = op(
    "avg_pool2d",
    "x",
    "2-D average pooling, NCHW or NHWC",
    tags=("pool",),
    count_include_pad=0,
    **_POOL_ATTRS,
    layout="NCHW",
)(_pool_infer)


@reference(max_pool2d)
@nchw_reference
def _max_pool2d(x, a):
    oh, ow = _pool_out_hw(x, a)
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min  # int8 pooling pads with the dtype's minimum
    win = _windows(x, *a["kernel"], a, fill=fill, extra=_ceil_extra(x, a, oh, ow))
    return np.ascontiguousarray(win.max(axis=(4, 5))[:, :, :oh, :ow], dtype=x.dtype)


def _pool_out_hw(x, a):
    (kh, kw), (pt, pl, pb, pr), (sh, sw), (dh, dw) = a["kernel"], a["pads"], a["strides"], a["dilations"]
    c = bool(a["ceil_mode"])
    return pool_out(x.shape[2], kh, sh, pt, pb, dh, c), pool_out(x.shape[3], kw, sw, pl, pr, dw, c)


@reference(avg_pool2d)
@nchw_reference
def _avg_pool2d(x, a):
    oh, ow = _pool_out_hw(x, a)
    extra = _ceil_extra(x, a, oh, ow)
    total = _windows(x.astype(np.float64), *a["kernel"], a, extra=extra).sum(axis=(4, 5))[:, :, :oh, :ow]
    if a["count_include_pad"]:
        # Padding counts, but the ceil-mode overhang past the explicit pads does not.
        (pt, pl, pb, pr) = a["pads"]
        ones = np.pad(np.ones((1, 1, *x.shape[2:])), ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=1.0)
        b = {**a, "pads": (0, 0, 0, 0)}
        count = _windows(ones, *a["kernel"], b, extra=extra).sum(axis=(4, 5))[:, :, :oh, :ow]
    else:
        ones = np.ones((1, 1, *x.shape[2:]))
        count = _windows(ones, *a["kernel"], a, extra=extra).sum(axis=(4, 5))[:, :, :oh, :ow]
    return np.ascontiguousarray(total / count, dtype=x.dtype)


def _global_pool_infer(ins, a):
    (x,) = ins
    if x.rank < 3:
        raise EmberError(f"input must have rank >= 3, got {fmt(x.shape)}")
    return (*x.shape[:2], *([1] * (x.rank - 2))), x.dtype


global_avg_pool = op("global_avg_pool", "x", "mean over all spatial axes", tags=("pool",))(_global_pool_infer)
global_max_pool = op("global_max_pool", "x", "max over all spatial axes", tags=("pool",))(_global_pool_infer)
reference(global_avg_pool)(
    lambda x, a: x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=np.float64).astype(x.dtype)
)
reference(global_max_pool)(lambda x, a: x.max(axis=tuple(range(2, x.ndim)), keepdims=True))


@op("batch_norm", "x scale bias mean var", "inference-mode batch normalization over axis 1", epsilon=1e-5)
def batch_norm(ins, a):
    x = ins[0]
    for v, what in zip(ins[1:], ("scale", "bias", "mean", "var")):
        if v.rank != 1 or (isinstance(x.shape[1], int) and v.shape[0] != x.shape[1]):
            raise EmberError(f"{what} {fmt(v.shape)} must be [{x.shape[1]}] for input {fmt(x.shape)}")
    return x.shape, x.dtype


@reference(batch_norm)
def _batch_norm(x, scale, bias, mean, var, a):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + a["epsilon"])
    return ((x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)).astype(x.dtype)


@op("lrn", "x", "local response normalization across channels", size=5, alpha=1e-4, beta=0.75, bias=1.0)
def lrn(ins, a):
    return ins[0].shape, ins[0].dtype


@reference(lrn)
def _lrn(x, a):
    size = a["size"]
    sq = np.pad(x.astype(np.float64) ** 2, [(0, 0), ((size - 1) // 2, size // 2)] + [(0, 0)] * (x.ndim - 2))
    s = sliding_window_view(sq, size, axis=1).sum(axis=-1)
    return (x / (a["bias"] + a["alpha"] / size * s) ** a["beta"]).astype(x.dtype)


def _axis_infer(ins, a):
    x = ins[0]
    norm_axis(a["axis"], x.rank)
    return x.shape, x.dtype


softmax = op("softmax", "x", "exp(x) / sum(exp(x)) along axis", axis=-1)(_axis_infer)
log_softmax = op("log_softmax", "x", "log(softmax(x)) along axis", axis=-1)(_axis_infer)


@reference(softmax)
def _softmax(x, a):
    e = np.exp(x - x.max(axis=a["axis"], keepdims=True))
    return (e / e.sum(axis=a["axis"], keepdims=True)).astype(x.dtype)


@reference(log_softmax)
def _log_softmax(x, a):
    s = x - x.max(axis=a["axis"], keepdims=True)
    return (s - np.log(np.exp(s).sum(axis=a["axis"], keepdims=True))).astype(x.dtype)


@op(
    "layer_norm", "x scale bias?", "normalize over the axes from `axis` on, then scale and shift", axis=-1, epsilon=1e-5
)
def layer_norm(ins, a):
    x = ins[0]
    norm_axis(a["axis"], x.rank)
    return x.shape, x.dtype


@reference(layer_norm)
def _layer_norm(x, scale, bias, a):
    axes = tuple(range(a["axis"] % x.ndim, x.ndim))
    xd = x.astype(np.float64)
    mean = xd.mean(axis=axes, keepdims=True)
    var = ((xd - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (xd - mean) / np.sqrt(var + a["epsilon"]) * scale
    return (y if bias is None else y + bias).astype(x.dtype)


@op("matmul", "a b", "numpy-style matrix product with batch broadcasting", tags=("matmul",))
def matmul(ins, a):
    from ember.ir.ops.shapes import broadcast

    x, y = ins
    if x.rank == 0 or y.rank == 0:
        raise EmberError("operands must have rank >= 1")
    xs = (1, *x.shape) if x.rank == 1 else x.shape
    ys = (*y.shape, 1) if y.rank == 1 else y.shape
    if isinstance(xs[-1], int) and isinstance(ys[-2], int) and xs[-1] != ys[-2]:
        raise EmberError(f"inner dims differ: {fmt(x.shape)} @ {fmt(y.shape)}")
    batch = broadcast(xs[:-2], ys[:-2])
    out = [*batch, xs[-2], ys[-1]]
    if x.rank == 1:
        out.pop(-2)
    if y.rank == 1:
        out.pop(-1)
    return tuple(out), x.dtype


reference(matmul)(lambda x, y, a: np.matmul(x, y))


@op("dense", "x w b?", "x @ w^T + b with w [N, K] (a fully connected layer)", tags=("matmul",))
def dense(ins, a):
    x, w, b = (ins + [None])[:3]
    _rank(w, 2, "weight")
    if x.rank < 1 or (isinstance(x.shape[-1], int) and x.shape[-1] != w.shape[1]):
        raise EmberError(f"input {fmt(x.shape)} does not match weight {fmt(w.shape)} (want [..., {w.shape[1]}])")
    if b is not None and tuple(b.shape) not in ((w.shape[0],), (1, w.shape[0])):
        raise EmberError(f"bias {fmt(b.shape)} must be [{w.shape[0]}]")
    return (*x.shape[:-1], w.shape[0]), x.dtype


@reference(dense)
def _dense(x, w, b, a):
    y = np.matmul(x, w.T)
    return (y if b is None else y + b.reshape(-1)).astype(x.dtype)


@op(
    "einsum",
    "xs*",
    "Einstein summation over the operands by numpy's `equation` (with ... and the implicit output)",
    tags=("matmul",),
    equation=Attr("str"),
)
def einsum(ins, a):
    if not ins:
        raise EmberError("needs at least one operand")
    lhs, arrow, rhs = a["equation"].replace(" ", "").partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ins):
        raise EmberError(f"equation '{a['equation']}' has {len(terms)} operands, got {len(ins)}")
    ell = max((x.rank - len(t) + 3 for t, x in zip(terms, ins) if "..." in t), default=0)
    sizes: dict[str, object] = {}
    for term, x in zip(terms, ins):
        for label, d in zip(_einsum_labels(term, x.rank, ell), x.shape):
            old = sizes.get(label)
            if isinstance(old, int) and isinstance(d, int) and 1 not in (old, d) and old != d:
                raise EmberError(f"'{label}' is {old} in one operand and {d} in another")
            sizes[label] = d if old is None or old == 1 else old
    if arrow:
        out = _einsum_labels(rhs, len(rhs.replace("...", "")) + (ell if "..." in rhs else 0), ell)
    else:
        letters = [c for t in terms for c in t.replace("...", "")]
        out = [f"...{i}" for i in range(ell)] + sorted(c for c in set(letters) if letters.count(c) == 1)
    return tuple(sizes[label] for label in out), ins[0].dtype


def _einsum_labels(term: str, rank: int, ell: int) -> list[str]:
    """term's label per axis of a rank-`rank` operand, its ... dims named ...0 to ...ell-1, right-aligned."""
    if "..." not in term:
        if len(term) != rank:
            raise EmberError(f"einsum term '{term}' has {len(term)} labels for a rank-{rank} operand")
        return list(term)
    head, tail = term.split("...")
    n = rank - len(head) - len(tail)
    if n < 0:
        raise EmberError(f"einsum term '{term}' has more labels than its operand's rank {rank}")
    return [*head, *(f"...{ell - n + i}" for i in range(n)), *tail]


reference(einsum)(lambda *xs_a: np.asarray(np.einsum(xs_a[-1]["equation"], *xs_a[:-1])))
