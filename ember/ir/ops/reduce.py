"""Reductions over axes: mean, sum, max, min, prod, argmax, argmin; the running sum, cumsum; and topk."""

from __future__ import annotations

import numpy as np

from ember.errors import EmberError
from ember.ir.ops.registry import Attr, op, reference
from ember.ir.ops.shapes import norm_axis

REDUCTIONS = {
    "reduce_mean": (lambda x, axes, k: x.mean(axis=axes, keepdims=k, dtype=np.float64), "mean"),
    "reduce_sum": (lambda x, axes, k: x.sum(axis=axes, keepdims=k), "sum"),
    "reduce_max": (lambda x, axes, k: x.max(axis=axes, keepdims=k), "maximum"),
    "reduce_min": (lambda x, axes, k: x.min(axis=axes, keepdims=k), "minimum"),
    "reduce_prod": (lambda x, axes, k: x.prod(axis=axes, keepdims=k), "product"),
}


def _reduced_axes(rank: int, axes) -> tuple[int, ...]:
    return tuple(range(rank)) if not axes else tuple(sorted({norm_axis(i, rank) for i in axes}))


def _infer(ins, a):
    x = ins[0]
    axes = _reduced_axes(x.rank, a["axes"])
    if a["keepdims"]:
        return tuple(1 if i in axes else d for i, d in enumerate(x.shape)), x.dtype
    return tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype


def _register(name: str, fn, what: str) -> None:
    schema = op(name, "x", f"{what} over `axes` (all when empty)", tags=("reduce",), axes=(), keepdims=1)(_infer)
    reference(schema)(
        lambda x, a, _fn=fn: np.asarray(_fn(x, _reduced_axes(x.ndim, a["axes"]), bool(a["keepdims"]))).astype(x.dtype)
    )


for _name, (_fn, _what) in REDUCTIONS.items():
    _register(_name, _fn, _what)


def _arg_infer(ins, a):
    x = ins[0]
    ax = norm_axis(a["axis"], x.rank)
    if a["keepdims"]:
        return tuple(1 if i == ax else d for i, d in enumerate(x.shape)), "i64"
    return tuple(d for i, d in enumerate(x.shape) if i != ax), "i64"


argmax = op("argmax", "x", "index of the largest entry along `axis`", tags=("reduce",), axis=0, keepdims=1)(_arg_infer)
argmin = op("argmin", "x", "index of the smallest entry along `axis`", tags=("reduce",), axis=0, keepdims=1)(_arg_infer)
reference(argmax)(lambda x, a: np.argmax(x, axis=a["axis"], keepdims=bool(a["keepdims"])).astype(np.int64))
reference(argmin)(lambda x, a: np.argmin(x, axis=a["axis"], keepdims=bool(a["keepdims"])).astype(np.int64))


@op(
    "cumsum",
    "x",
    "running sum along `axis`; `exclusive` leaves out each entry, `reverse` runs from the end",
    axis=0,
    exclusive=0,
    reverse=0,
)
def cumsum(ins, a):
    x = ins[0]
    norm_axis(a["axis"], x.rank)
    return x.shape, x.dtype


@reference(cumsum)
def _cumsum(x, a):
    ax = a["axis"] % x.ndim
    y = np.flip(x, ax) if a["reverse"] else x
    total = np.cumsum(y, axis=ax, dtype=x.dtype)
    if a["exclusive"]:
        total = total - y
    return np.ascontiguousarray(np.flip(total, ax) if a["reverse"] else total)


@op(
    "topk",
    "x",
    "the `k` largest (or smallest) entries along `axis`, sorted, and their i64 indices (lower first among equals)",
    k=Attr("int"),
    axis=-1,
    largest=1,
)
def topk(ins, a):
    x = ins[0]
    ax = norm_axis(a["axis"], x.rank)
    if isinstance(x.shape[ax], int) and not 0 <= a["k"] <= x.shape[ax]:
        raise EmberError(f"k={a['k']} must lie in [0, {x.shape[ax]}], the size of axis {ax}")
    shape = tuple(a["k"] if i == ax else d for i, d in enumerate(x.shape))
    return [(shape, x.dtype), (shape, "i64")]


@reference(topk)
def _topk(x, a):
    ax = a["axis"] % x.ndim
    key = (-x if x.dtype.kind == "f" else ~x) if a["largest"] else x  # ~ reverses integer order, overflow-free
    order = np.take(np.argsort(key, axis=ax, kind="stable"), np.arange(a["k"]), axis=ax)
    return [np.take_along_axis(x, order, axis=ax), order.astype(np.int64)]
