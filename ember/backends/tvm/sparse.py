"""Block-sparse (BSR) dense layers as hand-scheduled TIR kernels, marked so Ember's schedule rules leave them.

Each kernel is parallel over block rows of the weight. With a batch of 8 or more rows (a multiple of 8)
the input is transposed to [K, M] and the batch is the vector dim: each stored weight value is broadcast
and multiplied into a tile of batch lanes. Smaller batches vectorize over the R output rows of a block,
so tall blocks (8x1, 16x1) fill vector registers and 1xC blocks run as scalar loops. 1x1 blocks (unstructured
weights) have their own kernels: rows padded with zeros to LANES non-zeros, summed into independent partial
sums (a single multiply-add chain per row ran at its latency), accumulators allocated once per parallel task,
and 16-bit column indices where the reduction axis allows (the kernels stream one per value).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R
from tvm.script import tirx as T

from ember.backends.tvm.rules import _shape_of, layer_epilogue, rule
from ember.errors import EmberError
from ember.ir import dtypes

_OPAQUE = 8  # TVM's kOpaque op pattern: FuseOps keeps the kernel whole


def _batch_tile(m: int, r: int) -> int:
    """Batch lanes per tile on the batch-vector path (0: use the row-vector path); the batch is padded to it."""
    if m < 8:
        return 0
    return 16 if r * 16 <= 128 and (m % 16 == 0 or m >= 64) else 8


def batch_kernel(m: int, k: int, n: int, r: int, c: int, nnz: int, mt: int, dtype: str) -> tvm.tirx.PrimFunc:
    """y [M, N] = x @ W^T + bias with xt = x^T [K, M]; W in BSR, data laid out [nnz, C, R]."""
    nb = n // r

    @T.prim_func(private=True, s_tir=True)
    def sparse_dense_batch(
        xt: T.Buffer((k, m), dtype),
        data: T.Buffer((nnz, c, r), dtype),
        indices: T.Buffer((nnz,), "int32"),
        indptr: T.Buffer((nb + 1,), "int32"),
        bias: T.Buffer((n,), dtype),
        y: T.Buffer((m, n), dtype),
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": _OPAQUE})
        with T.sblock("root"):
            with T.sblock("sparse_dense"):
                T.reads(xt[0:k, 0:m], data[0:nnz, 0:c, 0:r], indices[0:nnz], indptr[0 : nb + 1], bias[0:n])
                T.writes(y[0:m, 0:n])
                for f in T.parallel(nb * (m // mt)):  # tile-major: a thread's tiles of xt stay in cache
                    acc = T.alloc_local((r, mt), dtype)
                    for ri in T.unroll(r):
                        for mi in T.vectorized(mt):
                            acc[ri, mi] = bias[f % nb * r + ri]
                    for b in T.serial(indptr[f % nb], indptr[f % nb + 1]):
                        for ci in range(c):
                            for ri in T.unroll(r):
                                for mi in T.vectorized(mt):
                                    acc[ri, mi] = (
                                        acc[ri, mi] + data[b, ci, ri] * xt[indices[b] * c + ci, f // nb * mt + mi]
                                    )
                    for mi in range(mt):
                        for ri in range(r):
                            y[f // nb * mt + mi, f % nb * r + ri] = acc[ri, mi]

    return sparse_dense_batch


def row_kernel(m: int, k: int, n: int, r: int, c: int, nnz: int, dtype: str) -> tvm.tirx.PrimFunc:
    """y [M, N] = x @ W^T + bias for small batches, vectorized over a block's R rows."""
    nb = n // r

    @T.prim_func(private=True, s_tir=True)
    def sparse_dense_rows(
        x: T.Buffer((m, k), dtype),
        data: T.Buffer((nnz, c, r), dtype),
        indices: T.Buffer((nnz,), "int32"),
        indptr: T.Buffer((nb + 1,), "int32"),
        bias: T.Buffer((n,), dtype),
        y: T.Buffer((m, n), dtype),
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": _OPAQUE})
        with T.sblock("root"):
            with T.sblock("sparse_dense"):
                T.reads(x[0:m, 0:k], data[0:nnz, 0:c, 0:r], indices[0:nnz], indptr[0 : nb + 1], bias[0:n])
                T.writes(y[0:m, 0:n])
                for io in T.parallel(nb):
                    for mi in range(m):
                        acc = T.alloc_local((r,), dtype)
                        for ri in T.vectorized(r):
                            acc[ri] = bias[io * r + ri]
                        for b in T.serial(indptr[io], indptr[io + 1]):
                            for ci in range(c):
                                for ri in T.vectorized(r):
                                    acc[ri] = acc[ri] + data[b, ci, ri] * x[mi, indices[b] * c + ci]
                        for ri in range(r):
                            y[mi, io * r + ri] = acc[ri]

    return sparse_dense_rows


LANES = 8  # independent partial sums per scalar row: a multiply-add chain's latency is hidden behind the others
PARTIALS = 4  # accumulators of the batch-vector scalar kernel (LANES must be a multiple)
CHUNK = 16  # output rows per parallel task of the scalar kernel: its accumulators are allocated once per task


def pad_rows(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, index: str = "int32") -> tuple[np.ndarray, ...]:
    """1x1-block BSR with each row's non-zeros padded with zeros (at column 0) to a multiple of LANES, its
    column indices as `index`."""
    counts = np.diff(indptr)
    padded = np.concatenate([[0], np.cumsum(-(-counts // LANES) * LANES)]).astype(np.int32)
    rows = np.repeat(np.arange(len(counts)), counts)
    at = padded[rows] + np.arange(len(indices)) - indptr[rows]
    new_data = np.zeros((padded[-1], *data.shape[1:]), data.dtype)
    new_indices = np.zeros(padded[-1], index)
    new_data[at], new_indices[at] = data, indices
    return new_data, new_indices, padded


def scalar_kernel(m: int, k: int, n: int, nnz: int, index: str, dtype: str) -> tvm.tirx.PrimFunc:
    """y [M, N] = x @ W^T + bias for small batches and 1x1 blocks (unstructured weights): each row's non-zeros
    go round-robin into LANES partial sums, summed once at the end of the row."""
    chunk = next(c for c in (CHUNK, 8, 4, 2, 1) if n % c == 0)

    @T.prim_func(private=True, s_tir=True)
    def sparse_dense_scalar(
        x: T.Buffer((m, k), dtype),
        data: T.Buffer((nnz, 1, 1), dtype),
        indices: T.Buffer((nnz,), index),
        indptr: T.Buffer((n + 1,), "int32"),
        bias: T.Buffer((n,), dtype),
        y: T.Buffer((m, n), dtype),
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": _OPAQUE})
        with T.sblock("root"):
            with T.sblock("sparse_dense"):
                T.reads(x[0:m, 0:k], data[0:nnz, 0, 0], indices[0:nnz], indptr[0 : n + 1], bias[0:n])
                T.writes(y[0:m, 0:n])
                for t in T.parallel(n // chunk):
                    acc = T.alloc_local((LANES,), dtype)
                    for i in range(chunk):
                        for mi in range(m):
                            for v in T.vectorized(LANES):
                                acc[v] = T.Cast(dtype, 0)
                            start = indptr[t * chunk + i]
                            for j in T.serial((indptr[t * chunk + i + 1] - start) // LANES):
                                for v in T.vectorized(LANES):
                                    acc[v] = (
                                        acc[v]
                                        + data[start + j * LANES + v, 0, 0] * x[mi, indices[start + j * LANES + v]]
                                    )
                            for v in T.unroll(LANES // 2):
                                acc[v] = acc[v] + acc[v + LANES // 2]
                            y[mi, t * chunk + i] = bias[t * chunk + i] + ((acc[0] + acc[2]) + (acc[1] + acc[3]))

    return sparse_dense_scalar


def scalar_batch_kernel(m: int, k: int, n: int, nnz: int, index: str, mt: int, dtype: str) -> tvm.tirx.PrimFunc:
    """y [M, N] = x @ W^T + bias with xt = x^T [K, M] and 1x1 blocks, rows padded to LANES non-zeros: each
    non-zero is broadcast into a tile of mt batch lanes, alternating between PARTIALS accumulators."""
    tiles = n * (m // mt)
    chunk = next(c for c in (CHUNK, 8, 4, 2, 1) if tiles % c == 0)

    @T.prim_func(private=True, s_tir=True)
    def sparse_dense_scalar_batch(
        xt: T.Buffer((k, m), dtype),
        data: T.Buffer((nnz, 1, 1), dtype),
        indices: T.Buffer((nnz,), index),
        indptr: T.Buffer((n + 1,), "int32"),
        bias: T.Buffer((n,), dtype),
        y: T.Buffer((m, n), dtype),
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": _OPAQUE})
        with T.sblock("root"):
            with T.sblock("sparse_dense"):
                T.reads(xt[0:k, 0:m], data[0:nnz, 0, 0], indices[0:nnz], indptr[0 : n + 1], bias[0:n])
                T.writes(y[0:m, 0:n])
                for t in T.parallel(tiles // chunk):  # tile-major: a task's rows share one tile of xt
                    acc = T.alloc_local((PARTIALS, mt), dtype)
                    for i in range(chunk):
                        for p in T.unroll(PARTIALS):
                            for mi in T.vectorized(mt):
                                acc[p, mi] = T.Cast(dtype, 0)
                        for j in T.serial((indptr[(t * chunk + i) % n + 1] - indptr[(t * chunk + i) % n]) // LANES):
                            for u in T.unroll(LANES):
                                for mi in T.vectorized(mt):
                                    acc[u % PARTIALS, mi] = (
                                        acc[u % PARTIALS, mi]
                                        + data[indptr[(t * chunk + i) % n] + j * LANES + u, 0, 0]
                                        * xt[
                                            indices[indptr[(t * chunk + i) % n] + j * LANES + u],
                                            (t * chunk + i) // n * mt + mi,
                                        ]
                                    )
                        for mi in range(mt):
                            y[(t * chunk + i) // n * mt + mi, (t * chunk + i) % n] = bias[(t * chunk + i) % n] + (
                                (acc[0, mi] + acc[1, mi]) + (acc[2, mi] + acc[3, mi])
                            )

    return sparse_dense_scalar_batch


@rule("sparse_dense")
def _sparse_dense(L, n, a):
    x, data, indices, indptr = n.inputs[:4]
    if not (data.is_const and indices.is_const and indptr.is_const):
        raise EmberError("BSR data, indices and indptr must be constants to compile", node=n.name, op=n.op)
    shape = _shape_of(x, n)
    k, m = shape[-1], int(np.prod(shape[:-1], dtype=np.int64))
    nnz, r, c = data.shape
    units = n.output.shape[-1]
    dtype = dtypes.to_tvm(x.dtype)
    bias = n.inputs[4] if len(n.inputs) > 4 and n.inputs[4] is not None else None
    bias_arr = bias.const.reshape(-1) if bias is not None and bias.is_const else np.zeros(units, data.const.dtype)
    bias_arg = L.const(bias_arr) if bias is None or bias.is_const else R.reshape(a[4], (units,))
    arrays = (np.ascontiguousarray(data.const.transpose(0, 2, 1)), indices.const, indptr.const)
    x2 = R.reshape(a[0], (m, k))
    mt = _batch_tile(m, r)
    padded = -(-m // mt) * mt if mt else m
    index = "int16" if k <= 1 << 15 else "int32"  # 1x1 kernels stream an index per value: 2 bytes, not 4
    arrays = pad_rows(*arrays, index) if r * c == 1 else arrays
    weights = [L.const(arr) for arr in arrays]
    if r * c == 1 and not mt:
        kernel, first = scalar_kernel(m, k, units, len(arrays[1]), index, dtype), x2
    elif mt:
        first = R.permute_dims(x2, [1, 0])
        first = first if padded == m else R.nn.pad(first, [0, 0, 0, padded - m])
        kernel = (
            scalar_batch_kernel(padded, k, units, len(arrays[1]), index, mt, dtype)
            if r * c == 1
            else batch_kernel(padded, k, units, r, c, nnz, mt, dtype)
        )
    else:
        kernel, first = row_kernel(m, k, units, r, c, nnz, dtype), x2
    gv = L.bb.add_func(kernel, "sparse_dense")
    y = relax.call_tir(gv, [first, *weights, bias_arg], relax.TensorType((padded, units), dtype))
    y = y if padded == m else R.strided_slice(y, axes=[0], begin=[0], end=[m])
    y = R.reshape(y, (*shape[:-1], units))
    return layer_epilogue(L, n, y, a[5] if len(a) > 5 else None)
