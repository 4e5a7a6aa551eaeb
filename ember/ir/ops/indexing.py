"""Index ops over whole index tuples: gather_nd, and the scatters (the ONNX forms: negative indices count from
the end; a scatter's `reduction` combines an update with what is there)."""

from __future__ import annotations

import numpy as np

from ember.errors import EmberError
from ember.ir.ops.registry import Attr, op, reference
from ember.ir.ops.shapes import norm_axis

REDUCTIONS = ("none", "add", "mul", "max", "min")
_COMBINE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _check_indices(idx) -> None:
    if idx.dtype not in ("i32", "i64"):
        raise EmberError(f"indices must be i32 or i64, got {idx.dtype}")


@op(
    "gather_nd",
    "x indices",
    "x at each index tuple (the indices' last dim) after `batch_dims` shared dims",
    batch_dims=0,
)
def gather_nd(ins, a):
    x, idx = ins
    _check_indices(idx)
    b, k = a["batch_dims"], idx.shape[-1]
    if not isinstance(k, int) or b + k > x.rank:
        raise EmberError(f"index tuples of length {k} after {b} batch dims do not fit x's rank {x.rank}")
    return (*idx.shape[:-1], *x.shape[b + k :]), x.dtype


@reference(gather_nd)
def _gather_nd(x, idx, a):
    b = a["batch_dims"]
    batch = int(np.prod(x.shape[:b]))
    xs, ids = x.reshape(batch, *x.shape[b:]), idx.reshape(batch, -1, idx.shape[-1])
    rows = [[xs[i][_wrapped(t, xs.shape[1:])] for t in ids[i]] for i in range(batch)]
    return np.asarray(rows, x.dtype).reshape(*idx.shape[:-1], *x.shape[b + idx.shape[-1] :])


def _wrapped(t, shape) -> tuple:
    return tuple(int(v) + (shape[j] if v < 0 else 0) for j, v in enumerate(t))


@op(
    "scatter_elements",
    "x indices updates",
    "x with updates[i] put at i with indices[i] in place of i's `axis` coordinate",
    axis=0,
    reduction=Attr("str", "none"),
)
def scatter_elements(ins, a):
    x, idx, upd = ins
    _check_indices(idx)
    norm_axis(a["axis"], x.rank)
    if idx.shape != upd.shape or idx.rank != x.rank:
        raise EmberError(f"indices {list(idx.shape)} and updates {list(upd.shape)} must match, of x's rank {x.rank}")
    _check_reduction(a)
    return x.shape, x.dtype


@reference(scatter_elements)
def _scatter_elements(x, idx, upd, a):
    ax, y = a["axis"] % x.ndim, x.copy()
    for pos in np.ndindex(*idx.shape):
        target = list(pos)
        target[ax] = int(idx[pos]) + (x.shape[ax] if idx[pos] < 0 else 0)
        _put(y, tuple(target), upd[pos], a["reduction"])
    return y


@op(
    "scatter_nd",
    "x indices updates",
    "x with each update put at its index tuple (the indices' last dim)",
    reduction=Attr("str", "none"),
)
def scatter_nd(ins, a):
    x, idx, upd = ins
    _check_indices(idx)
    k = idx.shape[-1]
    if not isinstance(k, int) or k > x.rank or tuple(upd.shape) != (*idx.shape[:-1], *x.shape[k:]):
        raise EmberError(f"updates {list(upd.shape)} do not fit indices {list(idx.shape)} into x {list(x.shape)}")
    _check_reduction(a)
    return x.shape, x.dtype


@reference(scatter_nd)
def _scatter_nd(x, idx, upd, a):
    y = x.copy()
    for pos in np.ndindex(*idx.shape[:-1]):
        _put(y, _wrapped(idx[pos], x.shape), upd[pos], a["reduction"])
    return y


def _check_reduction(a) -> None:
    if a["reduction"] not in REDUCTIONS:
        raise EmberError(f"reduction must be one of {', '.join(REDUCTIONS)}, got '{a['reduction']}'")


def _put(y: np.ndarray, at: tuple, value, reduction: str) -> None:
    y[at] = value if reduction == "none" else _COMBINE[reduction](y[at], value)
