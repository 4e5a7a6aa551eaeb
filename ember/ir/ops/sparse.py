"""Block-sparse layers: a dense layer whose weight is stored in BSR form (block compressed rows).

The weight W [N, K] of `x @ W^T` is cut into R x C blocks (R output rows by C reduction columns); only
non-zero blocks are kept: `data [nnz, R, C]`, their block columns `indices [nnz]`, and per block row
the range of its blocks `indptr [N/R + 1]`.
"""

from __future__ import annotations

import numpy as np

from ember.errors import EmberError
from ember.ir.graph import Node, Value
from ember.ir.ops.fused import _ACT_ATTRS, _decompose_layer, fused_dense
from ember.ir.ops.registry import Attr, decomposition, op, reference
from ember.ir.ops.shapes import broadcast, fmt


def bsr_from_dense(w: np.ndarray, block: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, indices, indptr) of `w` [N, K] in R x C blocks, keeping blocks with any non-zero."""
    r, c = block
    n, k = w.shape
    tiles = w.reshape(n // r, r, k // c, c).transpose(0, 2, 1, 3)
    keep = np.any(tiles != 0, axis=(2, 3))
    rows, cols = np.nonzero(keep)
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)
    return np.ascontiguousarray(tiles[rows, cols]), cols.astype(np.int32), indptr


BATCH_ROWS = 8  # from this many input rows the CPU kernels vectorize over the batch
ROW_LANES = 8  # unstructured rows are stored in groups of this many non-zeros (the CPU kernels' partial sums)


def pad_rows(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray) -> tuple[np.ndarray, ...]:
    """1x1-block BSR with each row's non-zeros padded with zeros (at column 0) to a multiple of ROW_LANES."""
    counts = np.diff(indptr)
    padded = np.concatenate([[0], np.cumsum(-(-counts // ROW_LANES) * ROW_LANES)]).astype(np.int32)
    rows = np.repeat(np.arange(len(counts)), counts)
    at = padded[rows] + np.arange(len(indices)) - indptr[rows]
    new_data = np.zeros((padded[-1], *data.shape[1:]), data.dtype)
    new_indices = np.zeros(padded[-1], indices.dtype)
    new_data[at], new_indices[at] = data, indices
    return new_data, new_indices, padded


def row_index_dtype(k: int) -> np.dtype:
    """Column index type of stored unstructured rows: 16-bit while the reduction axis allows."""
    return np.dtype(np.int16 if k <= 1 << 15 else np.int32)


def stored_bsr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, k: int, rows: int) -> tuple[np.ndarray, ...]:
    """The arrays a compiled sparse_dense keeps for its weight given `rows` input rows (the sparsity report counts
    their bytes). Blocks: (data as [nnz, C, R], indices, indptr). 1x1 blocks (unstructured): rows padded to
    ROW_LANES non-zeros, column indices as row_index_dtype(k); from BATCH_ROWS input rows (the batch-vector kernel)
    (data, indices, indptr) as such, under it one stream of groups [ROW_LANES values, their indices] viewed in the
    value type, with each row's range of groups (indptr / ROW_LANES)."""
    if data.shape[1] * data.shape[2] != 1:
        return np.ascontiguousarray(data.transpose(0, 2, 1)), indices, indptr
    values, cols, padded = pad_rows(data, indices, indptr)
    cols = cols.astype(row_index_dtype(k))
    if rows >= BATCH_ROWS:
        return values, cols, padded
    groups = len(cols) // ROW_LANES
    cols = cols.reshape(groups, ROW_LANES).view(data.dtype)
    return np.concatenate([values.reshape(groups, ROW_LANES), cols], axis=1), padded // ROW_LANES


def dense_from_bsr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, k: int) -> np.ndarray:
    """The dense weight [N, K] a BSR triple stands for."""
    nnz, r, c = data.shape
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    tiles = np.zeros((len(indptr) - 1, k // c, r, c), data.dtype)
    tiles[rows, indices] = data
    return tiles.transpose(0, 2, 1, 3).reshape((len(indptr) - 1) * r, k)


def check_bsr(data: Value, indices: Value, indptr: Value, k: int | str) -> tuple[int, int, int]:
    """Check a BSR triple's shapes (and contents when constant); returns (N, R, C)."""
    if data.rank != 3 or indices.rank != 1 or indptr.rank != 1:
        raise EmberError(
            f"BSR wants data [nnz, R, C], indices [nnz], indptr [rows+1]; got {fmt(data.shape)}, "
            f"{fmt(indices.shape)}, {fmt(indptr.shape)}"
        )
    nnz, r, c = data.shape
    if indices.shape[0] != nnz or indices.dtype != "i32" or indptr.dtype != "i32":
        raise EmberError(f"indices {fmt(indices.shape)} must be i32 [{nnz}] and indptr i32")
    if isinstance(k, int) and k % c:
        raise EmberError(f"block width {c} does not divide the input's last dim {k}")
    if indptr.is_const and indices.is_const:
        ptr, idx = indptr.const, indices.const
        if ptr[0] != 0 or ptr[-1] != nnz or np.any(np.diff(ptr) < 0):
            raise EmberError(f"indptr must rise from 0 to nnz={nnz}")
        if isinstance(k, int) and idx.size and (idx.min() < 0 or idx.max() >= k // c):
            raise EmberError(f"block column indices must lie in [0, {k // c})")
    return (indptr.shape[0] - 1) * r, r, c


@op(
    "sparse_dense",
    "x data indices indptr b? z?",
    "dense with a BSR weight (data [nnz, R, C], indices, indptr), plus bias, residual z, then an activation",
    tags=("matmul", "composite"),
    nm=Attr("ints", ()),
    **_ACT_ATTRS,
)
def sparse_dense(ins, a):
    x, data, indices, indptr, b, z = (ins + [None] * 6)[:6]
    n, _, _ = check_bsr(data, indices, indptr, x.shape[-1])
    if len(a["nm"]) not in (0, 2):
        raise EmberError(f"nm takes N and M (as in 2:4), got {a['nm']}")
    shape = (*x.shape[:-1], n)
    if b is not None and tuple(b.shape) not in ((n,), (1, n)):
        raise EmberError(f"bias {fmt(b.shape)} must be [{n}]")
    if z is not None and broadcast(shape, z.shape) != shape:
        raise EmberError(f"residual {fmt(z.shape)} must broadcast to the output {fmt(shape)}")
    if a["activation"] != "none":
        from ember.ir.ops.fused import activation_op

        activation_op(a["activation"], a["act_params"])
    return shape, x.dtype


@reference(sparse_dense)
def _sparse_dense(x, data, indices, indptr, b, z, a):
    w = dense_from_bsr(data, indices, indptr, x.shape[-1])
    attrs = {k: v for k, v in a.items() if k != "nm"}
    return fused_dense.evaluate([x, w, b, z], attrs)[0]


@decomposition(sparse_dense)
def _decompose_sparse_dense(node: Node, emit) -> Value:
    x, data, indices, indptr = node.inputs[:4]
    w = dense_from_bsr(data.const, indices.const, indptr.const, x.shape[-1])
    return _decompose_layer("dense")(_DenseView(node, w), emit)


class _DenseView:
    """The node as the fused_dense it stands for, for the shared layer decomposition."""

    def __init__(self, node: Node, w: np.ndarray):
        x, _, _, _, b, z = (node.inputs + [None] * 6)[:6]
        self.inputs = [x, w, b, z]
        self.attrs = {k: v for k, v in node.attrs.items() if k != "nm"}
