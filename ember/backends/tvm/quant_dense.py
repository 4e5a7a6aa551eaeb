"""The qdense lowering rule: one kernel per int8 dense layer, or one for a chain of small ones.

A layer's kernel multiplies [M, K] by weights packed at compile time as [N / 8, K / 4, 8, 4] into an int32
accumulator [M, N / 8, 8] and requantizes it per column (quant_rules' scheme). The small int8 layers before a
small CPU layer, each read by the next only (an MLP's layers at batch 1), are computed in that layer's kernel, each
requantized output a stack array for the next: a layer's own kernel cost a call and an output allocation, about
as long as the layer's arithmetic."""

from __future__ import annotations

import numpy as np
from tvm import te, tirx, topi
from tvm.relax import op as R

from ember.backends.tvm.quant_rules import (
    DEPTH,
    LANES,
    PACKED_DENSE,
    _bound,
    _emit_int8_kernel,
    _only_feeds,
    _whole_blocks,
    pack_weight,
    pairs_fit_int16,
)
from ember.backends.tvm.requantize import requant_terms, requantize, starts_from_added
from ember.backends.tvm.rules import absorbs, rule
from ember.ir import dtypes
from ember.ir.graph import Graph, Node

CHAIN_MACS = 1 << 18  # a layer with fewer multiply-adds runs on one thread (schedules.int8.MIN_PARALLEL_MACS)


def _packed_dense(x, wp, bias, rq, n_out: int, attrs, out_dtype):
    """[M, K] x packed [N/8, K/4, 8, 4] -> [M, N], int32 accumulator [M, N/8, 8], requantized per column."""
    m, kb, nb = int(x.shape[0]), int(wp.shape[1]), int(wp.shape[0])
    xp = x
    if int(x.shape[1]) != kb * DEPTH:
        xp = topi.nn.pad(x, [0, 0], [0, kb * DEPTH - int(x.shape[1])], pad_value=tirx.const(0, x.dtype), name="qpad")
    rk, ri = te.reduce_axis((0, kb), "kb"), te.reduce_axis((0, DEPTH), "ki")
    acc = te.compute(
        (m, nb, LANES),
        lambda i, no, ni: te.sum(
            xp[i, rk * DEPTH + ri].astype("int32") * wp[no, rk, ni, ri].astype("int32"),
            axis=[rk, ri],
        ),
        name=attrs["_name"],
    )
    return te.compute(
        (m, n_out),
        lambda i, j: requantize(acc[i, j // LANES, j % LANES], j, bias, rq, attrs, out_dtype),
        name="requantize",
    )


def _small(n: Node) -> bool:
    """A qdense over a 2-D input of fixed shape whose multiply-adds stay under CHAIN_MACS."""
    shape = n.inputs[0].shape
    if n.inputs[0].rank != 2 or not all(isinstance(d, int) for d in shape):
        return False
    return shape[0] * shape[1] * n.inputs[1].const.shape[0] < CHAIN_MACS


@absorbs("qdense")
def _absorbed_layers(graph: Graph, n: Node, device: str) -> list[Node]:
    """The chain of small integer-output qdense layers before a small CPU qdense `n`, first to last, each read by
    the next only and a multiple of 4 wide (whole dot-product blocks for the next)."""
    chain: list[Node] = []
    if device != "cpu" or not _small(n):
        return chain
    node = n
    while (p := node.inputs[0].producer) is not None and p.op == "qdense" and _small(p):
        if p.output.dtype == "f32" or p.output.shape[-1] % DEPTH or not _only_feeds(graph, p, node):
            break
        chain.insert(0, p)
        node = p
    return chain


@rule("qdense")
def _qdense(L, n, a):
    layers = [*L.absorbed.get(id(n), []), n]
    x = layers[0].inputs[0]
    lead, k = list(x.shape[:-1]), x.shape[-1]
    m = int(np.prod(lead, dtype=np.int64))
    xa = L.values[id(x)] if len(layers) > 1 else a[0]
    x2 = _bound(L, xa) if len(lead) == 1 else L.bb.emit(R.reshape(xa, (m, k)))
    args, stages, starts = [x2], [], {}
    for i, layer in enumerate(layers):
        w = layer.inputs[1].const
        b = layer.inputs[2] if len(layer.inputs) > 2 else None
        added, rq = requant_terms(b, w.T, layer.inputs[0].dtype, layer.attrs, L.device == "cpu")
        packed = pack_weight(np.ascontiguousarray(w.T))
        name = (PACKED_DENSE if pairs_fit_int16(packed) else PACKED_DENSE + "_wide") + (f"_s{i}" if i else "")
        out_dtype = dtypes.to_tvm(layer.output.dtype)
        if starts_from_added(added, out_dtype):
            starts[name] = len(args) + 1
        stages.append((w.shape[0], {**layer.attrs, "_name": name}, out_dtype, 2 + len(rq)))
        args += [L.const(packed), L.const(_whole_blocks(added)), *(L.const(r) for r in rq)]

    def fn(h, *t):
        for n_out, attrs, out_dtype, count in stages:
            h = _packed_dense(h, t[0], t[1], t[2:count], n_out=n_out, attrs=attrs, out_dtype=out_dtype)
            t = t[count:]
        return h

    y = _emit_int8_kernel(L, fn, args, "qdense", starts)
    n_out = n.inputs[1].const.shape[0]
    return y if len(lead) == 1 else R.reshape(y, [*lead, n_out])  # an identity reshape would be a kernel
