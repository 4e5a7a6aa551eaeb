"""Winograd convs' kernels (see backends/tvm/winograd.py). The transforms: tiles in parallel, channels in
vectors, each tile's matrix loops unrolled so the transform matrices fold to constants and their zeros drop
out. Of the two matrix products in each transform, the first is computed a row at a time where the second
reads it: a row is a 384-byte stack array, where a whole tile's 2304 bytes went to a heap workspace (TVM
allocates above 1 KiB so) and took 1.7x the time. The batched matmul between them: the shared contraction
schedule, its rows (tiles, padded by the lowering) in whole register blocks; or, fused into the output
transform's kernel (winograd.fuses_product), a row of tiles' matmuls at the start of each parallel iteration."""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis.common_analysis import get_sblockrealize

from ember.backends.tvm.schedules.common import (
    CPURule,
    bound_loops,
    divisor_at_most,
    extent,
    lanes_for,
    vector_factor,
)
from ember.backends.tvm.schedules.contraction import (
    Blocking,
    gather_epilogue,
    lane_tile,
    matmul_row_limit,
    schedule_contraction,
    vectorize_by_registers,
)
from ember.backends.tvm.schedules.prefetch import prefetch_weights
from ember.backends.tvm.winograd import INPUT_BLOCK, MATMUL_BLOCK, OUTPUT_BLOCK, PRODUCT_BLOCK

MATMUL = Blocking(vector_axis=2, row_axes=(1,), weights_by_lanes=True, exact_rows=True)


class Winograd(CPURule):
    """The input transform (its padding inlined), the batched matmul, or the output transform with its fused
    epilogue (bias, residual, activation)."""

    def schedule(self, sch: s_tir.Schedule, bits: int) -> s_tir.Schedule | None:
        names = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
        if INPUT_BLOCK in names:
            return _input(sch, names[INPUT_BLOCK], bits)
        if MATMUL_BLOCK in names:
            return _matmul(sch, names[MATMUL_BLOCK], bits)
        if OUTPUT_BLOCK in names:
            return _output(sch, names[OUTPUT_BLOCK], names.get(PRODUCT_BLOCK), bits)
        return None


def _matmul(sch: s_tir.Schedule, block, bits: int) -> s_tir.Schedule:
    """The shared contraction schedule, each reduction step prefetching the weight line of the next point's
    (the parallel iterations of one point's register rows read the same weights): at 14x14 and 7x7 a point's
    weights (256-1024 KiB) come from DRAM, every call, and the hardware prefetcher left the matmuls at 13 GB/s.
    ResNet-50's Winograd matmuls, 2 threads, Zen 3, in turns: 7.38 ms against 8.04 (2-4 points ahead even)."""
    sch = schedule_contraction(sch, block, MATMUL, bits)
    update = sch.get_sblock(MATMUL_BLOCK + "_update")
    loops = sch.get_loops(update)
    tiles = get_sblockrealize(sch, update).iter_values[1]  # [point, tile, channel]: tiles are the rows
    used = tirx.analysis.undefined_vars(tiles)
    rows = math.prod(extent(sch, lp) for lp in loops[1:] if any(v.same_as(sch.get(lp).loop_var) for v in used))
    return prefetch_weights(sch, update, loops[0], -(-int(sch.get(update).iter_vars[1].dom.extent) // rows))


def _input(sch: s_tir.Schedule, block, bits: int) -> s_tir.Schedule:
    columns = sch.get_producers(block)[0]
    for producer in sch.get_producers(columns):
        sch.compute_inline(producer)
    e, p, c, rj = bound_loops(sch, block)
    alpha = math.isqrt(extent(sch, e))  # the points of an alpha x alpha tile
    ea, eb = sch.split(e, factors=[alpha, alpha])
    co, ci = sch.split(c, factors=[None, vector_factor(extent(sch, c), lanes_for(sch, block, bits))])
    sch.reorder(p, co, ea, eb, rj, ci)
    sch.parallel(sch.fuse(p, co))
    sch.compute_at(columns, ea, preserve_unit_loops=True)
    _transform(sch, block, ci, (ea, eb, rj))
    _stage(sch, columns)
    return sch


def _output(sch: s_tir.Schedule, block, product, bits: int) -> s_tir.Schedule:
    """Output tiles in parallel; with the `product` block fused in, rows of tiles, each computing its products
    first (`_product`)."""
    epilogue = gather_epilogue(sch, block)
    rows = sch.get_producers(block)[0]
    m = int(sch.get(rows).writes[0].source.shape[1])  # [alpha, m, tiles, K]: the output tile's size
    n, h, w, k, ra = bound_loops(sch, block)
    th, i = sch.split(h, factors=[None, m])
    tw, j = sch.split(w, factors=[None, m])
    ko, ki = sch.split(k, factors=[None, vector_factor(extent(sch, k), lanes_for(sch, block, bits))])
    sch.reorder(n, th, tw, ko, j, i, ra, ki)
    if product:  # rows of tiles in parallel, each iteration's tiles in turn
        row, tile = sch.fuse(n, th), sch.fuse(tw, ko)
    else:
        row = tile = sch.fuse(n, th, tw, ko)
    sch.parallel(row)
    sch.reverse_compute_at(epilogue, tile, preserve_unit_loops=True)
    sch.vectorize(sch.get_loops(epilogue)[-1])
    sch.compute_at(rows, j, preserve_unit_loops=True)
    _transform(sch, block, ki, (j, i, ra))
    _stage(sch, rows)
    if product:
        sch.compute_at(product, row, preserve_unit_loops=True)
        _product(sch, product, bits)
    return sch


def _product(sch: s_tir.Schedule, block, bits: int) -> None:
    """A row of tiles' matmuls, point by point: register tiles of tiles (a divisor of the row under
    `matmul_row_limit`, as the lowering's `fuses_product` checked) x `lane_tile` output channels, accumulated in a
    stack array LLVM keeps in registers, then stored to the row's product buffer."""
    e, p, k, rc = sch.get_loops(block)[1:]
    lanes = lanes_for(sch, block, bits)
    vec = lane_tile(extent(sch, k), lanes)
    po, pi = sch.split(p, factors=[None, divisor_at_most(extent(sch, p), matmul_row_limit(extent(sch, k), bits))])
    ko, ki = sch.split(k, factors=[None, vec])
    sch.reorder(e, ko, po, rc, pi, ki)
    store = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(store, po, preserve_unit_loops=True)
    vectorize_by_registers(sch, sch.get_loops(store)[-1], lanes)
    sch.unroll(pi)
    vectorize_by_registers(sch, ki, lanes)
    vectorize_by_registers(sch, sch.get_loops(sch.decompose_reduction(block, rc))[-1], lanes)


def _transform(sch: s_tir.Schedule, block, vector, unrolled) -> None:
    """Vectorize a transform block's channel loop, unroll its matrix loops, and split off its init."""
    sch.vectorize(vector)
    for loop in unrolled:
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(sch.decompose_reduction(block, unrolled[-1]))[-1])


def _stage(sch: s_tir.Schedule, block) -> None:
    """Schedule the first matrix product of a transform, computed one row (input) or column (output) at a time
    inside the unrolled loop that consumes it: its reduction outside the channel vector, the rest unrolled."""
    loops = sch.get_loops(block)
    first = next(i for i, loop in enumerate(loops) if sch.get(loop).kind == tirx.ForKind.UNROLLED) + 1
    sch.reorder(loops[-1], loops[-2])
    inner = [loop for loop in loops[first:-2] if extent(sch, loop) > 1]
    _transform(sch, block, loops[-2], [*inner, loops[-1]])
