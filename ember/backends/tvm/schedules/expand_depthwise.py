"""The fused expand-then-depthwise kernel (backends/tvm/expand_depthwise.py): strips of output rows in parallel;
in each, the expanded rows it reads are computed first (register tiles of pixels x vectors over the input
channels, the expand's activation applied as a tile is stored), then the depthwise conv reads them from cache
(tiles of pixels x one vector over the 3x3 window, its activation applied in place)."""

from __future__ import annotations

from tvm import s_tir, tirx

from ember.backends.tvm.expand_depthwise import DEPTHWISE_ACTIVATION, DEPTHWISE_BLOCK, EXPAND_ACTIVATION, EXPAND_BLOCK
from ember.backends.tvm.schedules.common import CPURule, divisor_at_most, extent

# Expanded rows a strip buffers, at most, in bytes: about half of a core's L2 (Zen 4: 1 MiB; Cortex-A76: 512 KiB
# with 4 MiB of shared L3). MobileNetV2's 112x112 block (96 channels, stride 2) took 0.29 ms in strips of 4, 7 or 14
# output rows alike (387-1290 KB buffered) and 0.28 ms in strips of 2; its 56x56 block (144 channels, stride 1)
# 0.20 ms in strips of 7 (290 KB) or 14, 0.19 ms in strips of 28.
STRIP_BYTES = 512 * 1024
PIXELS = 8  # pixels a register tile holds, at most: the divisor of the width nearest below
TILE_PIXELS = (PIXELS, PIXELS // 2)  # the pixel counts register_tile weighs
VECTORS = (3, 2, 1)  # vectors of channels an expand tile holds: the most that divide the channels and fit
# Accumulators an expand tile may hold, by vector width: of 32 registers (AVX-512, NEON) or 16 (AVX2). The 56x56
# block's expand in tiles of 8 pixels x 3 zmm vectors took 0.20 ms, of 8 x 1 0.26 ms (Zen 4).
ACCUMULATORS = {512: 24, 256: 12, 128: 24}


def strip_rows(out_rows: int, stride: int, row_bytes: int) -> int:
    """Output rows per strip: a divisor of `out_rows` whose expanded rows fit STRIP_BYTES, preferring an even
    number of strips (a thread pool of 2 or 4 splits them evenly), then the most rows (the least recomputed)."""

    def key(r: int) -> tuple[bool, bool, int]:
        strips = out_rows // r
        return ((r - 1) * stride + 3) * row_bytes <= STRIP_BYTES, strips % 2 == 0 and strips >= 2, r

    return max((r for r in range(1, out_rows + 1) if out_rows % r == 0), key=key)


class ExpandDepthwise(CPURule):
    """Parallel strips of output rows; the expand's tiles computed at each strip, the depthwise's after them."""

    def schedule(self, sch: s_tir.Schedule, bits: int) -> s_tir.Schedule | None:
        names = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
        if not {EXPAND_BLOCK, EXPAND_ACTIVATION, DEPTHWISE_BLOCK, DEPTHWISE_ACTIVATION} <= set(names):
            return None
        _, h, w, e, _ = (int(v.dom.extent) for v in sch.get(names[EXPAND_BLOCK]).iter_vars)
        out_rows = int(sch.get(names[DEPTHWISE_BLOCK]).iter_vars[1].dom.extent)
        rows = strip_rows(out_rows, 1 if out_rows == h else 2, w * e * 4)
        lanes = bits // 32
        strip = _depthwise(sch, names[DEPTHWISE_BLOCK], names[DEPTHWISE_ACTIVATION], lanes, rows)
        tiles_at_strip(sch, names[EXPAND_BLOCK], names[EXPAND_ACTIVATION], strip, lanes, ACCUMULATORS[bits])
        return sch


def _depthwise(sch: s_tir.Schedule, block, activation, lanes: int, rows: int):
    """Tile the depthwise conv in strips (window_strips), its activation applied in place; returns the strip loop."""
    strip, channels = window_strips(sch, block, lanes, rows)
    sch.reverse_compute_at(activation, channels)
    sch.vectorize(sch.get_loops(activation)[-1])
    return strip


def window_strips(sch: s_tir.Schedule, block, lanes: int, rows: int):
    """Tile a window reduction over [n, rows, columns, channels] (a depthwise conv, a pool): strips of `rows`
    output rows (parallel), pixel tiles x one vector over the window; returns the strip and the channel loops."""
    n, i, j, e, kh, kw = sch.get_loops(block)
    io, ii = sch.split(i, [None, rows])
    jo, ji = sch.split(j, [None, divisor_at_most(extent(sch, j), PIXELS)])
    eo, ei = sch.split(e, [None, lanes])
    sch.reorder(n, io, ii, jo, eo, kh, kw, ji, ei)
    strip = sch.fuse(n, io)
    sch.parallel(strip)
    sch.unroll(ji)
    sch.vectorize(ei)
    sch.vectorize(sch.get_loops(sch.decompose_reduction(block, kh))[-1])
    return strip, eo


def register_tile(columns: int, vectors: int, accumulators: int) -> tuple[int, int]:
    """Pixels and vectors of a register tile over `columns` pixels of `vectors` vectors of channels: of PIXELS
    pixels and half as many (each a divisor of the columns where one of at least half of it does, else masked),
    with the most VECTORS that divide the channels and fit `accumulators`, the tile loading the fewest inputs and
    weights per useful FMA (p * v / (p + v) FMAs a load, times the share of a masked last tile's pixels that
    exist). With AVX2's 12 accumulators that is 4 x 2 (or 4 x 3) where 8 x 1 broadcast each input for one FMA
    (Zen 3, 2 threads: ResNet-50's stem 1.77 against 1.53 ms, MobileNetV2's three expand-depthwise kernels 0.917
    against 0.721 ms, SqueezeNet's stem 3 x 2 0.355 against 8 x 1 0.361 ms); AVX-512's and NEON's 24 keep 8 pixels."""

    def fmas_per_load(tile: tuple[int, int]) -> float:
        pixels, v = tile
        return pixels * v / (pixels + v) * columns / (-(-columns // pixels) * pixels)

    tiles = []
    for target in TILE_PIXELS:
        pixels = divisor_at_most(columns, target)
        pixels = pixels if 2 * pixels >= target else target
        tiles.append((pixels, next(v for v in VECTORS if vectors % v == 0 and pixels * v <= accumulators)))
    return max(tiles, key=fmas_per_load)  # the first (more pixels) on a tie


def tiles_at_strip(sch: s_tir.Schedule, block, activation, strip, lanes: int, accumulators: int) -> None:
    """Compute `activation` (of the contraction `block`, over [n, rows, columns, channels]) at `strip`: tiles of
    pixels x vectors (register_tile) over the contraction's reductions, at most `accumulators` vectors, the
    activation applied as a tile is stored."""
    sch.compute_at(activation, strip)
    h, w, e = sch.get_loops(activation)[-3:]
    pixels, vectors = register_tile(extent(sch, w), extent(sch, e) // lanes, accumulators)
    wo, wi = sch.split(w, [None, pixels])
    eo, ei = sch.split(e, [None, vectors * lanes])
    sch.reorder(h, wo, eo, wi, ei)
    sch.compute_at(block, eo)
    reductions = sum(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)
    loops = sch.get_loops(block)
    cw, ce = loops[-reductions - 2 : -reductions]
    cv, cl = sch.split(ce, [None, lanes])
    sch.reorder(*loops[-reductions:], cw, cv, cl)
    for loop in (cw, cv):
        sch.unroll(loop)
    sch.vectorize(cl)
    sch.vectorize(sch.get_loops(sch.decompose_reduction(block, loops[-reductions]))[-1])
    av, al = sch.split(ei, [None, lanes])
    sch.unroll(wi)
    sch.unroll(av)
    sch.vectorize(al)
