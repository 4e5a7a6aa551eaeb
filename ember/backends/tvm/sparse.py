"""Block-sparse (BSR) dense layers as hand-scheduled TIR kernels, marked so Ember's schedule rules leave them.

Each kernel is parallel over block rows of the weight; its accumulators are stack arrays (global scope: in
"local" scope each was a TVMBackendAllocWorkspace call per parallel task). With a batch of 8 or more rows (a
multiple of 8) the input is transposed to [K, M] and the batch is the vector dim: each stored weight value is
broadcast and multiplied into a tile of batch lanes, and the tile is stored as a vector of y^T [N, M] (the
transpose back fuses with the next layer's). Smaller batches vectorize over the R output rows of a block, so
tall blocks (8x1, 16x1) fill vector registers and 1xC blocks run as scalar loops. 1x1 blocks (unstructured
weights) have their own kernels over ember.ir.ops.sparse.stored_bsr's packing: rows padded with zeros to
ROW_LANES non-zeros, summed into independent partial sums (a single multiply-add chain per row ran at its
latency), 16-bit column indices where the reduction axis allows; under BATCH_ROWS rows values and indices are
interleaved in groups as one stream, prefetched PREFETCH groups ahead.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R
from tvm.script import tirx as T

from ember.backends.tvm.calls import OPAQUE
from ember.backends.tvm.rules import _shape_of, layer_epilogue, rule
from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.ops.sparse import BATCH_ROWS, ROW_LANES, row_index_dtype, stored_bsr


def _batch_tile(m: int, r: int) -> int:
    """Batch lanes per tile on the batch-vector path (0: use the row-vector path); the batch is padded to it."""
    if m < BATCH_ROWS:
        return 0
    return 16 if r * 16 <= 128 and (m % 16 == 0 or m >= 64) else 8


def _act(value: tvm.tirx.PrimExpr, relu: bool) -> tvm.tirx.PrimExpr:
    """A kernel's output value, through ReLU when the layer's activation runs in the kernel."""
    return T.max(value, T.Cast(str(value.ty), 0)) if relu else value


def batch_kernel(m: int, k: int, n: int, r: int, c: int, nnz: int, mt: int, dtype: str) -> tvm.tirx.PrimFunc:
    """y^T [N, M] = (x @ W^T + bias)^T with xt = x^T [K, M]; W in BSR, data laid out [nnz, C, R]."""
    nb = n // r

    @T.prim_func(private=True, s_tir=True)
    def sparse_dense_batch(
        xt: T.Buffer((k, m), dtype),
        data: T.Buffer((nnz, c, r), dtype),
        indices: T.Buffer((nnz,), "int32"),
        indptr: T.Buffer((nb + 1,), "int32"),
        bias: T.Buffer((n,), dtype),
        y: T.Buffer((n, m), dtype),
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            with T.sblock("sparse_dense"):
                T.reads(xt[0:k, 0:m], data[0:nnz, 0:c, 0:r], indices[0:nnz], indptr[0 : nb + 1], bias[0:n])
                T.writes(y[0:n, 0:m])
                for f in T.parallel(nb * (m // mt)):  # tile-major: a thread's tiles of xt stay in cache
                    acc = T.decl_buffer((r, mt), dtype, scope="global")
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
                    for ri in range(r):
                        for mi in T.vectorized(mt):
                            y[f % nb * r + ri, f // nb * mt + mi] = acc[ri, mi]

    return sparse_dense_batch


def row_kernel(m: int, k: int, n: int, r: int, c: int, nnz: int, dtype: str, relu: bool = False) -> tvm.tirx.PrimFunc:
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
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            with T.sblock("sparse_dense"):
                T.reads(x[0:m, 0:k], data[0:nnz, 0:c, 0:r], indices[0:nnz], indptr[0 : nb + 1], bias[0:n])
                T.writes(y[0:m, 0:n])
                for io in T.parallel(nb):
                    for mi in range(m):
                        acc = T.decl_buffer((r,), dtype, scope="global")
                        for ri in T.vectorized(r):
                            acc[ri] = bias[io * r + ri]
                        for b in T.serial(indptr[io], indptr[io + 1]):
                            for ci in range(c):
                                for ri in T.vectorized(r):
                                    acc[ri] = acc[ri] + data[b, ci, ri] * x[mi, indices[b] * c + ci]
                        for ri in range(r):
                            y[mi, io * r + ri] = _act(acc[ri], relu)

    return sparse_dense_rows


PARTIALS = 4  # accumulators of the batch-vector scalar kernel (ROW_LANES must be a multiple)
CHUNK = 16  # output rows per parallel task of the scalar kernels
PREFETCH = 128  # groups ahead (6 KB of f32 values and int16 indices) the batch-1 kernel prefetches


def _index_view(slots: int, index: str, dtype: str) -> tuple[int, int]:
    """(index-typed slots per group, where a group's indices start) in the index view of a packed group stream."""
    bits, index_bits = tvm.DataType(dtype).bits, tvm.DataType(index).bits
    return slots * bits // index_bits, ROW_LANES * bits // index_bits


def scalar_kernel(
    m: int, k: int, n: int, groups: int, slots: int, index: str, dtype: str, relu: bool = False
) -> tvm.tirx.PrimFunc:
    """y [M, N] = x @ W^T + bias for small batches and 1x1 blocks (unstructured weights), W as stored_bsr packs
    it: each row's groups go into ROW_LANES partial sums, summed once at the end of the row."""
    chunk = next(c for c in (CHUNK, 8, 4, 2, 1) if n % c == 0)
    per, at = _index_view(slots, index, dtype)

    @T.prim_func(private=True, s_tir=True)
    def sparse_dense_scalar(
        x: T.Buffer((m, k), dtype),
        packed: T.Buffer((groups, slots), dtype),
        gptr: T.Buffer((n + 1,), "int32"),
        bias: T.Buffer((n,), dtype),
        y: T.Buffer((m, n), dtype),
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            with T.sblock("sparse_dense"):
                T.reads(x[0:m, 0:k], packed[0:groups, 0:slots], gptr[0 : n + 1], bias[0:n])
                T.writes(y[0:m, 0:n])
                cols = T.decl_buffer((groups * per,), index, data=packed.data)
                for t in T.parallel(n // chunk):
                    acc = T.decl_buffer((ROW_LANES,), dtype, scope="global")
                    for i in range(chunk):
                        for mi in range(m):
                            for v in T.vectorized(ROW_LANES):
                                acc[v] = T.Cast(dtype, 0)
                            for g in T.serial(gptr[t * chunk + i], gptr[t * chunk + i + 1]):
                                T.evaluate(_prefetch(packed, g))
                                for v in T.vectorized(ROW_LANES):
                                    acc[v] = acc[v] + packed[g, v] * x[mi, cols[g * per + at + v]]
                            for v in T.unroll(ROW_LANES // 2):
                                acc[v] = acc[v] + acc[v + ROW_LANES // 2]
                            y[mi, t * chunk + i] = _act(
                                bias[t * chunk + i] + ((acc[0] + acc[2]) + (acc[1] + acc[3])), relu
                            )

    return sparse_dense_scalar


def _prefetch(packed: tvm.tirx.Buffer, g: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
    """Prefetch the group PREFETCH ahead of `g` (past the end is harmless: a prefetch never faults)."""
    return T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(packed[g + PREFETCH, 0]), 0, 3, 1)


def scalar_batch_kernel(m: int, k: int, n: int, nnz: int, index: str, mt: int, dtype: str) -> tvm.tirx.PrimFunc:
    """y^T [N, M] = (x @ W^T + bias)^T with xt = x^T [K, M] and 1x1 blocks, rows padded to ROW_LANES non-zeros: each
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
        y: T.Buffer((n, m), dtype),
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            with T.sblock("sparse_dense"):
                T.reads(xt[0:k, 0:m], data[0:nnz, 0, 0], indices[0:nnz], indptr[0 : n + 1], bias[0:n])
                T.writes(y[0:n, 0:m])
                for t in T.parallel(tiles // chunk):  # tile-major: a task's rows share one tile of xt
                    acc = T.decl_buffer((PARTIALS, mt), dtype, scope="global")
                    for i in range(chunk):
                        for p in T.unroll(PARTIALS):
                            for mi in T.vectorized(mt):
                                acc[p, mi] = T.Cast(dtype, 0)
                        for j in T.serial((indptr[(t * chunk + i) % n + 1] - indptr[(t * chunk + i) % n]) // ROW_LANES):
                            for u in T.unroll(ROW_LANES):
                                for mi in T.vectorized(mt):
                                    acc[u % PARTIALS, mi] = (
                                        acc[u % PARTIALS, mi]
                                        + data[indptr[(t * chunk + i) % n] + j * ROW_LANES + u, 0, 0]
                                        * xt[
                                            indices[indptr[(t * chunk + i) % n] + j * ROW_LANES + u],
                                            (t * chunk + i) // n * mt + mi,
                                        ]
                                    )
                        for mi in T.vectorized(mt):
                            y[(t * chunk + i) % n, (t * chunk + i) // n * mt + mi] = bias[(t * chunk + i) % n] + (
                                (acc[0, mi] + acc[1, mi]) + (acc[2, mi] + acc[3, mi])
                            )

    return sparse_dense_scalar_batch


def _kernel(m: int, k: int, units: int, block: tuple[int, int], mt: int, arrays: tuple, dtype: str, relu: bool):
    """The kernel for an [m, k] input (m padded to the batch tile mt, 0: none) and a weight stored as `arrays`;
    `relu` (row paths only) applies the layer's ReLU in the kernel."""
    r, c = block
    if r * c == 1:
        index = dtypes.to_tvm(dtypes.from_numpy(row_index_dtype(k)))
        if mt:
            return scalar_batch_kernel(m, k, units, len(arrays[1]), index, mt, dtype)
        return scalar_kernel(m, k, units, *arrays[0].shape, index, dtype, relu)
    nnz = arrays[0].shape[0]
    if mt:
        return batch_kernel(m, k, units, r, c, nnz, mt, dtype)
    return row_kernel(m, k, units, r, c, nnz, dtype, relu)


@rule("sparse_dense")
def _sparse_dense(L, n, a):
    x, data, indices, indptr = n.inputs[:4]
    if not (data.is_const and indices.is_const and indptr.is_const):
        raise EmberError("BSR data, indices and indptr must be constants to compile", node=n.name, op=n.op)
    shape = _shape_of(x, n)
    k, m = shape[-1], int(np.prod(shape[:-1], dtype=np.int64))
    _, r, c = data.shape
    units = n.output.shape[-1]
    dtype = dtypes.to_tvm(x.dtype)
    bias = n.inputs[4] if len(n.inputs) > 4 and n.inputs[4] is not None else None
    bias_arr = bias.const.reshape(-1) if bias is not None and bias.is_const else np.zeros(units, data.const.dtype)
    bias_arg = L.const(bias_arr) if bias is None or bias.is_const else R.reshape(a[4], (units,))
    arrays = stored_bsr(data.const, indices.const, indptr.const, k, m)
    first = a[0] if len(shape) == 2 else R.reshape(a[0], (m, k))  # a same-shape reshape is a copy kernel
    mt = _batch_tile(m, r)
    padded = -(-m // mt) * mt if mt else m
    if mt:
        first = R.permute_dims(first, [1, 0])
        first = first if padded == m else R.nn.pad(first, [0, 0, 0, padded - m])
    residual = a[5] if len(a) > 5 else None
    # ReLU in the row-path kernels (no ReLU kernel after them); the batch-vector kernels ran 15-20% slower with it
    # (CNN batch 16, when they stored y strided), so there it stays in the transpose kernel that follows them
    relu = residual is None and n.attrs["activation"] == "relu" and not mt
    gv = L.bb.add_func(_kernel(padded, k, units, (r, c), mt, arrays, dtype, relu), "sparse_dense")
    weights = [L.const(arr) for arr in arrays]
    out = (units, padded) if mt else (padded, units)  # batch-vector kernels store lanes contiguously: y^T
    y = relax.call_tir(gv, [first, *weights, bias_arg], relax.TensorType(out, dtype))
    y = R.permute_dims(y, [1, 0]) if mt else y
    y = y if padded == m else R.strided_slice(y, axes=[0], begin=[0], end=[m])
    y = y if len(shape) == 2 else R.reshape(y, (*shape[:-1], units))
    return y if relu else layer_epilogue(L, n, y, residual)
