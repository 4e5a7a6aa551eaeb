"""Winograd F(4x4, 3x3) convolution for NHWC float32 CPU convs (Lavin & Gray, 2016): a 3x3 stride-1 conv
becomes an input transform, 36 independent matmuls against weights transformed at compile time, and an output
transform with the conv's epilogue: 4x fewer multiply-adds than the direct conv, for 4x the weight bytes."""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx, topi

from ember.ir.graph import Node

# Lavin's matrices for F(4, 3), interpolation points 0, +-1, +-2: small integer transforms, so the input and
# output transforms fold to a few multiply-adds by constants per element once their loops are unrolled.
B_T, G, A_T = (
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
)
M, ALPHA = len(A_T), len(B_T)  # output tile m x m, input tile alpha x alpha = (m + 2) x (m + 2)
# Below these the direct conv is as fast (one kernel, in turns, 2 threads, Zen 3): with 8 input channels the
# transforms cost what the matmuls save (0.99-1.03x the time), with 16 Winograd took 0.82x. A 7x7 output is 4
# tiles: the matmuls stream 4x the direct conv's weight bytes for 4 rows each, and 512 channels took 1.6x the
# time. 10x10 outputs took 0.75-0.85x (64-256 channels), 14x14 to 56x56 0.45-0.65x. (8x8 with 256 channels
# took 0.6x, but only while its 9.4 MB of transformed weights stayed in cache, as they do not in a deep net.)
MIN_CHANNELS = 16
MIN_PIXELS = 100
# The tiles (the matmuls' rows) are padded to a multiple of this, so register blocks of 6 rows (the limit with
# two vectors of lanes on AVX2 and NEON; AVX-512 takes 6 as exact) divide them. With a masked last block the
# matmuls of a 28x28 output (49 tiles) ran at 31 GMAC/s, where 24x24 (36 tiles) ran at 77 (one kernel, 2 threads).
ROW_BLOCK = 6
COLUMNS_BLOCK, INPUT_BLOCK = "winograd_columns", "winograd_input"
MATMUL_BLOCK, ROWS_BLOCK = "winograd_matmul", "winograd_rows"
OUTPUT_BLOCK = "winograd_output"


def transform_weight(w_hwio: np.ndarray) -> np.ndarray:
    """U = G g G^T for each (input, output) channel pair of a 3x3 HWIO weight: [alpha^2, C, K], in float64
    then rounded once to the weight's type."""
    g = np.asarray(G, dtype=np.float64)
    u = np.einsum("ai,ijck,bj->abck", g, w_hwio.astype(np.float64), g)
    return np.ascontiguousarray(u.reshape(-1, *w_hwio.shape[2:]).astype(w_hwio.dtype))


def _coefficient(matrix, row, col) -> tirx.PrimExpr:
    """matrix[row][col] for index expressions: a select over the nonzero entries, which folds to a constant
    (and a zero term to nothing) once the schedule unrolls the loops that `row` and `col` come from."""
    expr = tirx.const(0.0, "float32")
    for i, line in enumerate(matrix):
        for j, value in enumerate(line):
            if value:
                expr = tirx.Select(tirx.all(row == i, col == j), tirx.const(float(value), "float32"), expr)
    return expr


def input_transform(x: te.Tensor, pads) -> te.Tensor:
    """V[e, p, c] = (B^T d_p B)[e // alpha, e % alpha] for each m x m output tile p's alpha x alpha input patch
    d_p (zero-padded), [alpha^2, tiles, C]; B^T applies to the patch's columns, then to its rows. The tiles are
    padded to a multiple of ROW_BLOCK with zero patches."""
    n, h, w, c = (int(d) for d in x.shape)
    top, left, bottom, right = pads
    th, tw = -(-(h + top + bottom - 2) // M), -(-(w + left + right - 2) // M)
    padded = topi.nn.pad(x, [0, top, left, 0], [0, th * M + 2 - h - top, tw * M + 2 - w - left, 0], name="pad")
    count = n * th * tw
    rows = -(-count // ROW_BLOCK) * ROW_BLOCK

    def patch(p, i, j, ch):
        pixel = padded[p // (th * tw), p % (th * tw) // tw * M + i, p % tw * M + j, ch]
        return pixel if count == rows else tirx.if_then_else(p < count, pixel, tirx.const(0.0, x.dtype))

    ri = te.reduce_axis((0, ALPHA), "ri")
    columns = te.compute(
        (ALPHA, ALPHA, rows, c),
        lambda a, j, p, ch: te.sum(patch(p, ri, j, ch) * _coefficient(B_T, a, ri), axis=ri),
        name=COLUMNS_BLOCK,
    )
    rj = te.reduce_axis((0, ALPHA), "rj")
    return te.compute(
        (ALPHA * ALPHA, rows, c),
        lambda e, p, ch: te.sum(columns[e // ALPHA, rj, p, ch] * _coefficient(B_T, e % ALPHA, rj), axis=rj),
        name=INPUT_BLOCK,
    )


def batch_matmul(v: te.Tensor, u: te.Tensor) -> te.Tensor:
    """P[e, p, k] = sum_c V[e, p, c] U[e, c, k]: one matmul per point e of the alpha x alpha tile."""
    e, p, c = (int(d) for d in v.shape)
    rc = te.reduce_axis((0, c), "rc")
    k = int(u.shape[2])
    return te.compute((e, p, k), lambda i, j, n: te.sum(v[i, j, rc] * u[i, rc, n], axis=rc), name=MATMUL_BLOCK)


def output_transform(product: te.Tensor, shape) -> te.Tensor:
    """Y[n, y, x, k] = (A^T P_t A)[y % m, x % m] of the tile t holding output pixel (y, x): [N, H, W, K]; A
    applies to P's columns, then A^T to its rows."""
    n, h, w, k = shape
    th, tw = -(-h // M), -(-w // M)
    rb = te.reduce_axis((0, ALPHA), "rb")
    rows = te.compute(
        (ALPHA, M, n * th * tw, k),
        lambda a, j, p, ch: te.sum(product[a * ALPHA + rb, p, ch] * _coefficient(A_T, j, rb), axis=rb),
        name=ROWS_BLOCK,
    )
    ra = te.reduce_axis((0, ALPHA), "ra")

    def pixel(b, y, x, ch):
        p = (b * th + y // M) * tw + x // M
        return te.sum(rows[ra, x % M, p, ch] * _coefficient(A_T, y % M, ra), axis=ra)

    return te.compute((n, h, w, k), pixel, name=OUTPUT_BLOCK)


def fits(node: Node, device: str) -> bool:
    """Whether conv2d `node` runs as Winograd: NHWC float32 on a CPU, 3x3, stride and dilation 1, one group, a
    constant weight, static shapes, and enough channels and output pixels for the transforms to pay."""
    at, w, out = node.attrs, node.inputs[1], node.output
    if device != "cpu" or at["layout"] != "NHWC" or at["group"] != 1 or not w.is_const or out.dtype != "f32":
        return False
    if not (node.inputs[0].is_static and out.is_static):
        return False
    if list(at["strides"]) != [1, 1] or list(at["dilations"]) != [1, 1]:
        return False
    kh, kw, c, k = w.shape
    return (kh, kw) == (3, 3) and min(c, k) >= MIN_CHANNELS and out.shape[1] * out.shape[2] >= MIN_PIXELS


def conv2d(bb: relax.BlockBuilder, x: relax.Expr, node: Node) -> relax.Expr:
    """Emit the Winograd form of conv2d `node` on input `x`: its [N, H, W, K] result, before bias."""
    weight = relax.const(transform_weight(node.inputs[1].const), "float32")
    v = bb.emit_te(input_transform, x, list(node.attrs["pads"]), primfunc_name_hint=INPUT_BLOCK)
    product = bb.emit_te(batch_matmul, v, weight, primfunc_name_hint=MATMUL_BLOCK)
    shape = [int(d) for d in node.output.shape]
    return bb.emit_te(output_transform, product, shape, primfunc_name_hint=OUTPUT_BLOCK)
