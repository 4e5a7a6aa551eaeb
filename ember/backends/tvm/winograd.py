"""Winograd F(4x4, 3x3) and F(2x2, 3x3) convolution for NHWC float32 CPU convs (Lavin & Gray, 2016): a 3x3
stride-1 conv becomes an input transform, alpha^2 independent matmuls against weights transformed at compile time,
and an output transform with the conv's epilogue: 4x (2.25x) fewer multiply-adds than the direct conv, for 4x
(1.8x) the weight bytes."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from tvm import relax, te, tirx, topi

from ember.ir.graph import Node


@dataclass(frozen=True)
class Tile:
    """F(m x m, 3x3): an m x m output tile from an alpha x alpha input patch, alpha = m + 2."""

    m: int
    b_t: tuple[tuple[float, ...], ...]
    g: tuple[tuple[float, ...], ...]
    a_t: tuple[tuple[float, ...], ...]

    @property
    def alpha(self) -> int:
        return self.m + 2


# Lavin's matrices, interpolation points 0, +-1, +-2 (F(4, 3)) and 0, +-1 (F(2, 3)): small integer transforms, so
# the input and output transforms fold to a few multiply-adds by constants per element once their loops unroll.
F4 = Tile(
    4,
    (
        (4, 0, -5, 0, 1, 0),
        (0, -4, -4, 1, 1, 0),
        (0, 4, -4, -1, 1, 0),
        (0, -2, -1, 2, 1, 0),
        (0, 2, -1, -2, 1, 0),
        (0, 4, 0, -5, 0, 1),
    ),
    (
        (1 / 4, 0, 0),
        (-1 / 6, -1 / 6, -1 / 6),
        (-1 / 6, 1 / 6, -1 / 6),
        (1 / 24, 1 / 12, 1 / 6),
        (1 / 24, -1 / 12, 1 / 6),
        (0, 0, 1),
    ),
    ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
)
F2 = Tile(
    2,
    ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
    ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
    ((1, 1, 1, 0), (0, 1, -1, -1)),
)
# Below these the direct conv is as fast (one kernel, in turns, 2 threads, Zen 3): with 8 input channels the
# transforms cost what the matmuls save (0.99-1.03x the time), with 16 Winograd took 0.82x. A 7x7 output is 4
# tiles: the matmuls stream 4x the direct conv's weight bytes for 4 rows each, and 512 channels took 1.6x the
# time. 10x10 outputs took 0.75-0.85x (64-256 channels), 14x14 to 56x56 0.45-0.65x. (8x8 with 256 channels
# took 0.6x, but only while its 9.4 MB of transformed weights stayed in cache, as they do not in a deep net.)
MIN_CHANNELS = 16
MIN_PIXELS = 100
# Smaller outputs, from 7x7, with this many channels run F(2x2, 3x3): 16 tiles of a 7x7 output for 16 points,
# 1.8x the weight bytes. Per-kernel minimums in the model (10 rounds in turns, 2 threads, Zen 4): ResNet-50's two
# 7x7 convs of 512 channels 2.08 ms against 2.42 direct; ResNet-18's three about 3.0 against 3.5 ms. At 14x14
# F(2x2, 3x3) took what F(4x4, 3x3) does (3.00 ms against 3.03, transforms included). Unmeasured below 256.
MIN_SMALL_PIXELS = 49
MIN_SMALL_CHANNELS = 256
# The tiles (the matmuls' rows) are padded to a multiple of a register block's rows, so whole blocks cover them:
# with a masked last block the matmuls of a 28x28 output (49 tiles) ran at 31 GMAC/s, where 24x24 (36 tiles) ran
# at 77 (one kernel, 2 threads). The block is the one from half the schedule's row limit (for the target and the
# output channels) up to it, which the schedule takes as exact, that pads least. Against padding to a multiple of
# 6 (the AVX2 and NEON limit) for every target, with AVX-512's limit of 8 ResNet-50's matmuls took 0.87x the time
# at 14x14 and 0.90x at 7x7 (16 tiles: 16 rows, not 18) and 0.91x at 28x28 (49, not 54); its kernels' sum 0.98x
# (per-kernel minimums of 12 rounds in turns, 2 threads, Zen 4).
COLUMNS_BLOCK, INPUT_BLOCK = "winograd_columns", "winograd_input"
MATMUL_BLOCK, ROWS_BLOCK = "winograd_matmul", "winograd_rows"
OUTPUT_BLOCK, PRODUCT_BLOCK = "winograd_output", "winograd_product"
# Where the transformed weights fit in L2 (each thread reads all of them), the matmuls run inside the output
# transform's kernel: each thread computes one row of tiles' products into a buffer that stays in its cache and
# transforms them there. The separate matmul kernel splits the points between the threads, so each output tile
# read half its products from the other core's cache (SqueezeNet's 55x55 products are 1.8 MB). SqueezeNet, whole
# model, in-process A/B in turns, 2 threads, Zen 4: 0.967x the time in the machine's fast phases and 0.799x in its
# slow ones (fusing its 55x55 convs alone: 0.971x, 0.847x); ResNet-50 0.99x. Its 13x13 convs, with 1.3 and 2.4
# MB of weights, took 1.08-1.10x fused.
FUSED_WEIGHT_BYTES = 1 << 20
MIN_FUSED_ROWS = 7  # rows of tiles (the kernel's parallel loop): SqueezeNet's 27x27 convs, 4 and 3 per thread
# Tiles per register block of the fused matmuls, which must divide a row of tiles: a masked block made the
# accumulator's region unbounded (a 170-row heap array for 13 tiles a row). Blocks of fewer tiles load each weight
# vector for fewer multiply-adds; 4 was chosen, not measured (the models above take 7).
MIN_FUSED_BLOCK = 4


def transform_weight(w_hwio: np.ndarray, tile: Tile = F4) -> np.ndarray:
    """U = G g G^T for each (input, output) channel pair of a 3x3 HWIO weight: [alpha^2, C, K], in float64
    then rounded once to the weight's type."""
    g = np.asarray(tile.g, dtype=np.float64)
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


def padded_tiles(count: int, row_limit: int) -> int:
    """`count` tiles padded to whole register blocks of the rows, from half `row_limit` up to it, that pad least
    (the most rows of those)."""
    rows = min(range(row_limit, (row_limit - 1) // 2, -1), key=lambda r: -(-count // r) * r)
    return -(-count // rows) * rows


def input_transform(x: te.Tensor, pads, tile: Tile, row_limit: int) -> te.Tensor:
    """V[e, p, c] = (B^T d_p B)[e // alpha, e % alpha] for each m x m output tile p's alpha x alpha input patch
    d_p (zero-padded), [alpha^2, tiles, C]; B^T applies to the patch's columns, then to its rows. The tiles are
    padded with zero patches to whole register blocks of at most `row_limit` rows (`padded_tiles`)."""
    n, h, w, c = (int(d) for d in x.shape)
    top, left, bottom, right = pads
    m, alpha = tile.m, tile.alpha
    th, tw = -(-(h + top + bottom - 2) // m), -(-(w + left + right - 2) // m)
    padded = topi.nn.pad(x, [0, top, left, 0], [0, th * m + 2 - h - top, tw * m + 2 - w - left, 0], name="pad")
    count = n * th * tw
    rows = padded_tiles(count, row_limit)

    def patch(p, i, j, ch):
        pixel = padded[p // (th * tw), p % (th * tw) // tw * m + i, p % tw * m + j, ch]
        return pixel if count == rows else tirx.if_then_else(p < count, pixel, tirx.const(0.0, x.dtype))

    ri = te.reduce_axis((0, alpha), "ri")
    columns = te.compute(
        (alpha, alpha, rows, c),
        lambda a, j, p, ch: te.sum(patch(p, ri, j, ch) * _coefficient(tile.b_t, a, ri), axis=ri),
        name=COLUMNS_BLOCK,
    )
    rj = te.reduce_axis((0, alpha), "rj")
    return te.compute(
        (alpha * alpha, rows, c),
        lambda e, p, ch: te.sum(columns[e // alpha, rj, p, ch] * _coefficient(tile.b_t, e % alpha, rj), axis=rj),
        name=INPUT_BLOCK,
    )


def batch_matmul(v: te.Tensor, u: te.Tensor, name: str = MATMUL_BLOCK) -> te.Tensor:
    """P[e, p, k] = sum_c V[e, p, c] U[e, c, k]: one matmul per point e of the alpha x alpha tile."""
    e, p, c = (int(d) for d in v.shape)
    rc = te.reduce_axis((0, c), "rc")
    k = int(u.shape[2])
    return te.compute((e, p, k), lambda i, j, n: te.sum(v[i, j, rc] * u[i, rc, n], axis=rc), name=name)


def output_transform(product: te.Tensor, shape, tile: Tile) -> te.Tensor:
    """Y[n, y, x, k] = (A^T P_t A)[y % m, x % m] of the tile t holding output pixel (y, x): [N, H, W, K]; A
    applies to P's columns, then A^T to its rows."""
    n, h, w, k = shape
    m, alpha = tile.m, tile.alpha
    th, tw = -(-h // m), -(-w // m)
    rb = te.reduce_axis((0, alpha), "rb")
    rows = te.compute(
        (alpha, m, n * th * tw, k),
        lambda a, j, p, ch: te.sum(product[a * alpha + rb, p, ch] * _coefficient(tile.a_t, j, rb), axis=rb),
        name=ROWS_BLOCK,
    )
    ra = te.reduce_axis((0, alpha), "ra")

    def pixel(b, y, x, ch):
        p = (b * th + y // m) * tw + x // m
        return te.sum(rows[ra, x % m, p, ch] * _coefficient(tile.a_t, y % m, ra), axis=ra)

    return te.compute((n, h, w, k), pixel, name=OUTPUT_BLOCK)


def product_output(v: te.Tensor, u: te.Tensor, shape, tile: Tile) -> te.Tensor:
    """`batch_matmul` and `output_transform` as one function, the product a buffer of its own."""
    return output_transform(batch_matmul(v, u, PRODUCT_BLOCK), shape, tile)


def fuses_product(node: Node, tile: Tile, row_limit: int) -> bool:
    """Whether Winograd conv2d `node` computes its matmuls in its output transform's kernel (`FUSED_WEIGHT_BYTES`),
    a row of tiles at a time in register blocks of at most `row_limit` tiles that divide the row."""
    c, k = node.inputs[1].shape[2:]
    n, h, w = node.output.shape[:3]
    weight_bytes = tile.alpha**2 * c * k * 4  # float32
    rows, row = n * -(-h // tile.m), -(-w // tile.m)
    blocks = any(row % d == 0 for d in range(MIN_FUSED_BLOCK, min(row, row_limit) + 1))
    return weight_bytes <= FUSED_WEIGHT_BYTES and rows >= MIN_FUSED_ROWS and blocks


def tile_for(node: Node, device: str) -> Tile | None:
    """The tile conv2d `node` runs Winograd with, or None: NHWC float32 on a CPU, 3x3, stride and dilation 1, one
    group, a constant weight, static shapes, and enough channels and output pixels for the transforms to pay."""
    at, w, out = node.attrs, node.inputs[1], node.output
    if device != "cpu" or at["layout"] != "NHWC" or at["group"] != 1 or not w.is_const or out.dtype != "f32":
        return None
    if not (node.inputs[0].is_static and out.is_static):
        return None
    if list(at["strides"]) != [1, 1] or list(at["dilations"]) != [1, 1]:
        return None
    kh, kw, c, k = w.shape
    if (kh, kw) != (3, 3) or min(c, k) < MIN_CHANNELS:
        return None
    pixels = out.shape[1] * out.shape[2]
    if pixels >= MIN_PIXELS:
        return F4
    return F2 if pixels >= MIN_SMALL_PIXELS and min(c, k) >= MIN_SMALL_CHANNELS else None


def conv2d(bb: relax.BlockBuilder, x: relax.Expr, node: Node, tile: Tile, row_limit: int) -> relax.Expr:
    """Emit the Winograd form of conv2d `node` on input `x` with `tile`, its matmuls' rows padded for register
    blocks of at most `row_limit` rows, or fused into the output transform (`fuses_product`): its [N, H, W, K]
    result, before bias."""
    weight = relax.const(transform_weight(node.inputs[1].const, tile), "float32")
    pads = list(node.attrs["pads"])
    shape = [int(d) for d in node.output.shape]
    fused = fuses_product(node, tile, row_limit)
    transform = functools.partial(input_transform, tile=tile, row_limit=1 if fused else row_limit)
    v = bb.emit_te(transform, x, pads, primfunc_name_hint=INPUT_BLOCK)
    if fused:  # its matmuls take a row of tiles at a time: no padding to register blocks
        transform = functools.partial(product_output, tile=tile)
        return bb.emit_te(transform, v, weight, shape, primfunc_name_hint=OUTPUT_BLOCK)
    product = bb.emit_te(batch_matmul, v, weight, primfunc_name_hint=MATMUL_BLOCK)
    transform = functools.partial(output_transform, tile=tile)
    return bb.emit_te(transform, product, shape, primfunc_name_hint=OUTPUT_BLOCK)
