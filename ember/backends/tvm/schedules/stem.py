"""The stem conv-and-max-pool kernel (backends/tvm/stem.py): strips of pooled rows in parallel; in each, the conv
rows the strip's windows read are computed first (register tiles of pixels x vectors over the conv's window and
input channels, bias and activation applied as a tile is stored), then the pool reads them from cache."""

from __future__ import annotations

from tvm import s_tir

from ember.backends.tvm.schedules.common import CPURule, divisor_at_most, extent
from ember.backends.tvm.schedules.expand_depthwise import ACCUMULATORS, PIXELS, STRIP_BYTES, VECTORS
from ember.backends.tvm.stem import POOL_STRIDE, STEM_ACTIVATION, STEM_POOL


def even_strips(out_rows: int, stride: int, row_bytes: int) -> int:
    """Pooled rows per strip: the fewest strips whose conv rows (for a window of 3 rows) fit STRIP_BYTES, made an
    even number (a pool of 2 or 4 threads splits them evenly; the last strip may be short)."""
    fit = max(1, (STRIP_BYTES // row_bytes - 3) // stride + 1)
    strips = -(-out_rows // fit)
    strips += strips % 2 if strips < out_rows else 0
    return -(-out_rows // strips)


class StemPool(CPURule):
    """Parallel strips of pooled rows; the conv's tiles computed at each strip, the pool's after them."""

    def schedule(self, sch: s_tir.Schedule, bits: int) -> s_tir.Schedule | None:
        names = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
        if not {STEM_ACTIVATION, STEM_POOL} <= set(names):
            return None
        conv = sch.get_producers(names[STEM_ACTIVATION])[0]
        for producer in sch.get_producers(conv):  # the padding, the transpose before it
            for earlier in sch.get_producers(producer):
                sch.compute_inline(earlier)
            sch.compute_inline(producer)
        _, _, w, k = (int(v.dom.extent) for v in sch.get(names[STEM_ACTIVATION]).iter_vars)
        out_rows = int(sch.get(names[STEM_POOL]).iter_vars[1].dom.extent)
        pool_stride = int(sch.get(names[STEM_POOL]).annotations[POOL_STRIDE])
        lanes = bits // 32
        strip = _pool(sch, names[STEM_POOL], lanes, even_strips(out_rows, pool_stride, w * k * 4))
        _conv(sch, conv, names[STEM_ACTIVATION], strip, lanes, ACCUMULATORS[bits])
        return sch


def _pool(sch: s_tir.Schedule, block, lanes: int, rows: int):
    """Tile the pool: strips of `rows` pooled rows (parallel), pixel tiles x one vector over the window; returns
    the strip loop."""
    n, i, j, c, py, px = sch.get_loops(block)
    io, ii = sch.split(i, [None, rows])
    jo, ji = sch.split(j, [None, divisor_at_most(extent(sch, j), PIXELS)])
    co, ci = sch.split(c, [None, lanes])
    sch.reorder(n, io, ii, jo, co, py, px, ji, ci)
    strip = sch.fuse(n, io)
    sch.parallel(strip)
    sch.unroll(ji)
    sch.vectorize(ci)
    sch.vectorize(sch.get_loops(sch.decompose_reduction(block, py))[-1])
    return strip


def _conv(sch: s_tir.Schedule, block, activation, strip, lanes: int, accumulators: int) -> None:
    """Compute the strip's conv rows at `strip`: tiles of PIXELS pixels (the last masked) x vectors over the
    window and input channels, at most `accumulators` vectors; bias and activation as each tile is stored."""
    sch.compute_at(activation, strip)
    h, w, e = sch.get_loops(activation)[-3:]
    vectors = next(v for v in VECTORS if (extent(sch, e) // lanes) % v == 0 and PIXELS * v <= accumulators)
    wo, wi = sch.split(w, [None, PIXELS])
    eo, ei = sch.split(e, [None, vectors * lanes])
    sch.reorder(h, wo, eo, wi, ei)
    sch.compute_at(block, eo)
    cw, ce, ry, rx, rc = sch.get_loops(block)[-5:]
    cv, cl = sch.split(ce, [None, lanes])
    sch.reorder(ry, rx, rc, cw, cv, cl)
    for loop in (cw, cv):
        sch.unroll(loop)
    sch.vectorize(cl)
    sch.vectorize(sch.get_loops(sch.decompose_reduction(block, ry))[-1])
    av, al = sch.split(ei, [None, lanes])
    sch.unroll(wi)
    sch.unroll(av)
    sch.vectorize(al)
