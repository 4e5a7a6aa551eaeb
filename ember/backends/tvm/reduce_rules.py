"""Reductions and scans: mean, sum, prod; max and min (from the infinities, as ONNX means them); arg max and
min; the running sum."""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx
from tvm.relax import op as R

from ember.backends.tvm.rules import rule
from ember.ir import dtypes


@rule("global_avg_pool", "global_max_pool")
def _global_pool(L, n, a):
    axes = list(range(2, n.inputs[0].rank))
    if n.op == "global_avg_pool":
        return R.mean(a[0], axis=axes, keepdims=True)
    return _extreme(L, n, a[0], "max", axes, True)


_REDUCE = {"reduce_mean": R.mean, "reduce_sum": R.sum, "reduce_prod": R.prod}


@rule(*_REDUCE)
def _reduce(L, n, a):
    axes = list(n.attrs["axes"]) or None
    return _REDUCE[n.op](a[0], axis=axes, keepdims=bool(n.attrs["keepdims"]))


@rule("reduce_max", "reduce_min")
def _reduce_extreme(L, n, a):
    return _extreme(L, n, a[0], n.op[len("reduce_") :], list(n.attrs["axes"]), bool(n.attrs["keepdims"]))


@rule("cumsum")
def _cumsum(L, n, a):
    axis, reverse = n.attrs["axis"] % n.inputs[0].rank, n.attrs["reverse"]
    x = R.flip(a[0], axis) if reverse else a[0]
    y = R.cumsum(x, axis=axis, exclusive=bool(n.attrs["exclusive"]))
    return R.flip(y, axis) if reverse else y


@rule("argmax", "argmin")
def _arg(L, n, a):
    fn = R.argmax if n.op == "argmax" else R.argmin
    return fn(a[0], axis=n.attrs["axis"], keepdims=bool(n.attrs["keepdims"]))


def _extreme(L, n, x, kind: str, axes: list[int], keepdims: bool):
    """max or min over `axes`. TVM's start from the dtype's finite extreme, so a float row of -inf reduced to
    -3.4e38, not -inf (an attention row masked whole then tests unequal to -inf); this one starts from -inf/+inf."""
    if not dtypes.is_float(n.inputs[0].dtype):
        return (R.max if kind == "max" else R.min)(x, axis=axes, keepdims=keepdims)
    rank = n.inputs[0].rank
    axes = sorted({i % rank for i in axes} if axes else range(rank))
    start = -np.inf if kind == "max" else np.inf
    combine = tirx.max if kind == "max" else tirx.min
    reducer = te.comm_reducer(lambda p, q: combine(p, q), lambda t: tirx.const(start, t), name=kind)

    def compute(t):
        ks = {i: te.reduce_axis((0, t.shape[i]), f"k{i}") for i in axes}
        kept = [i for i in range(rank) if i not in ks]
        shape = [1 if i in ks else t.shape[i] for i in range(rank)] if keepdims else [t.shape[i] for i in kept]

        def body(*idx):
            at = dict(zip(range(rank) if keepdims else kept, idx))
            return reducer(t[tuple(ks[i] if i in ks else at[i] for i in range(rank))], axis=list(ks.values()))

        return te.compute(shape, body, name=f"T_{kind}")

    return L.bb.emit_te(compute, x if isinstance(x, relax.Var) else L.bb.emit(x), primfunc_name_hint=kind)
