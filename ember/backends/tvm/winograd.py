"""Winograd F(m x m, 3 x 3) convolution for NHWC float CPU convs: a 3x3 stride-1 conv becomes an input
transform, alpha^2 = (m + 2)^2 independent matmuls against weights transformed at compile time, and an output
transform, doing 4x (m = 4) or 2.25x (m = 2) fewer multiply-adds than the direct conv (Lavin & Gray, 2016)."""

from __future__ import annotations

import os

import numpy as np
from tvm import relax, te, tirx, topi

from ember.ir.graph import Node

# Lavin's matrices, interpolation points 0, +-1, +-2 (B^T, G, A^T): small integer transforms, so the input and
# output transforms fold to a few adds and shifts per element once their loops are unrolled.
MATRICES = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
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
    ),
}
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


def transform_weight(w_hwio: np.ndarray, m: int) -> np.ndarray:
    """U = G g G^T for each (input, output) channel pair of a 3x3 HWIO weight: [alpha^2, C, K], in float64
    then rounded once to the weight's type."""
    g = np.asarray(MATRICES[m][1], dtype=np.float64)
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


def tiles(out_h: int, out_w: int, m: int) -> tuple[int, int]:
    return -(-out_h // m), -(-out_w // m)


def input_transform(x: te.Tensor, pads, m: int) -> te.Tensor:
    """V[e, p, c] = (B^T d_p B)[e // alpha, e % alpha] for each m x m output tile p's alpha x alpha input patch
    d_p (zero-padded), [alpha^2, tiles, C]; B^T applies to the patch's columns, then to its rows."""
    n, h, w, c = (int(d) for d in x.shape)
    top, left, bottom, right = pads
    th, tw = tiles(h + top + bottom - 2, w + left + right - 2, m)
    alpha = m + 2
    padded = topi.nn.pad(x, [0, top, left, 0], [0, th * m + 2 - h - top, tw * m + 2 - w - left, 0], name="pad")
    bt = MATRICES[m][0]
    count = n * th * tw
    rows = -(-count // ROW_BLOCK) * ROW_BLOCK

    def patch(p, i, j, ch):
        pixel = padded[p // (th * tw), p % (th * tw) // tw * m + i, p % tw * m + j, ch]
        return pixel if count == rows else tirx.if_then_else(p < count, pixel, tirx.const(0.0, x.dtype))

    ri = te.reduce_axis((0, alpha), "ri")
    columns = te.compute(
        (alpha, alpha, rows, c),
        lambda a, j, p, ch: te.sum(patch(p, ri, j, ch) * _coefficient(bt, a, ri), axis=ri),
        name=COLUMNS_BLOCK,
    )
    rj = te.reduce_axis((0, alpha), "rj")
    return te.compute(
        (alpha * alpha, rows, c),
        lambda e, p, ch: te.sum(columns[e // alpha, rj, p, ch] * _coefficient(bt, e % alpha, rj), axis=rj),
        name=INPUT_BLOCK,
    )


def batch_matmul(v: te.Tensor, u: te.Tensor) -> te.Tensor:
    """M[e, p, k] = sum_c V[e, p, c] U[e, c, k]: one matmul per point e of the alpha x alpha tile."""
    e, p, c = (int(d) for d in v.shape)
    rc = te.reduce_axis((0, c), "rc")
    k = int(u.shape[2])
    return te.compute((e, p, k), lambda i, j, n: te.sum(v[i, j, rc] * u[i, rc, n], axis=rc), name=MATMUL_BLOCK)


def output_transform(product: te.Tensor, shape, m: int) -> te.Tensor:
    """Y[n, y, x, k] = (A^T M_p A)[y % m, x % m] of the tile p holding output pixel (y, x): [N, H, W, K]; A
    applies to M's columns, then A^T to its rows."""
    n, h, w, k = shape
    th, tw = tiles(h, w, m)
    alpha = m + 2
    at = MATRICES[m][2]
    rb = te.reduce_axis((0, alpha), "rb")
    rows = te.compute(
        (alpha, m, n * th * tw, k),
        lambda a, j, p, ch: te.sum(product[a * alpha + rb, p, ch] * _coefficient(at, j, rb), axis=rb),
        name=ROWS_BLOCK,
    )
    ra = te.reduce_axis((0, alpha), "ra")

    def pixel(b, y, x, ch):
        p = (b * th + y // m) * tw + x // m
        return te.sum(rows[ra, x % m, p, ch] * _coefficient(at, y % m, ra), axis=ra)

    return te.compute((n, h, w, k), pixel, name=OUTPUT_BLOCK)


def tile_size(node: Node, device: str) -> int | None:
    """The output tile m to run `node` (a conv2d) as Winograd F(m, 3), or None for the direct conv: NHWC float32
    on a CPU, 3x3, stride and dilation 1, one group, a constant weight, and enough channels and output pixels
    for the transforms to pay."""
    at, w = node.attrs, node.inputs[1]
    if device != "cpu" or at["layout"] != "NHWC" or at["group"] != 1 or not w.is_const:
        return None
    if not (node.inputs[0].is_static and node.output.is_static):
        return None
    if node.output.dtype != "f32" or list(at["strides"]) != [1, 1] or list(at["dilations"]) != [1, 1]:
        return None
    kh, kw, c, k = w.shape
    forced = os.environ.get("EMBER_WINOGRAD", "auto")  # "0": never (for A/B comparisons); "2", "4": that tile
    if (kh, kw) != (3, 3) or min(c, k) < MIN_CHANNELS or forced == "0":
        return None
    if forced in ("2", "4"):
        return int(forced)
    _, out_h, out_w, _ = node.output.shape
    return 4 if out_h * out_w >= MIN_PIXELS else None


def conv2d(bb: relax.BlockBuilder, x: relax.Expr, node: Node, m: int) -> relax.Expr:
    """Emit the Winograd form of conv2d `node` on input `x`: its [N, H, W, K] result, before bias."""
    weight = transform_weight(node.inputs[1].const, m)
    v = bb.emit_te(input_transform, x, list(node.attrs["pads"]), m, primfunc_name_hint="winograd_input")
    product = bb.emit_te(batch_matmul, v, relax.const(weight, "float32"), primfunc_name_hint="winograd_matmul")
    shape = [int(d) for d in node.output.shape]
    return bb.emit_te(output_transform, product, shape, m, primfunc_name_hint="winograd_output")
