"""Attention (softmax(Q K^T * scale + mask) V) as one kernel: a parallel loop over blocks of query rows
computes each block's scores, softmax and output while they are still in cache."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV

from ember.backends.tvm.schedules.common import (
    SCHEDULE_FAILURES,
    CPURule,
    extent,
    lane_partials,
    lanes_for,
    schedule_injective,
    vector_factor,
    vectorize_innermost,
    vectorize_last,
    vectorize_partials,
)
from ember.backends.tvm.schedules.contraction import vectorize_by_registers

SCORES, OUTPUT = "T_batch_matmul_NT", "T_batch_matmul_NN"
SOFTMAX = ("T_softmax_norm", "T_softmax_expsum", "T_softmax_exp", "T_softmax_maxelem")  # consumers first
ROWS = 4  # query rows per parallel block: ROWS x 2 vectors of output accumulate in registers


class Attention(CPURule):
    """Keys transposed once so scores vectorize over key positions; then per block of query rows:
    scores, softmax and P V, with the output tile accumulated in registers."""

    def schedule(self, sch: s_tir.Schedule, bits: int) -> s_tir.Schedule | None:
        blocks = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
        if not {SCORES, OUTPUT, *SOFTMAX} <= blocks.keys():
            return None
        scores, output = blocks[SCORES], blocks[OUTPUT]
        keys = transpose_keys(sch, scores)
        inline_copies(sch, [scores, output, keys, *(blocks[name] for name in SOFTMAX)])
        schedule_injective(sch, keys, bits)
        partials = {name: lane_partials(sch, blocks[name], bits) for name in ("T_softmax_maxelem", "T_softmax_expsum")}
        tile = schedule_output(sch, output, bits)
        for name in SOFTMAX:
            sch.compute_at(blocks[name], tile, preserve_unit_loops=True)
            if partials.get(name) is not None:
                sch.compute_at(partials[name], tile, preserve_unit_loops=True)
                vectorize_partials(sch, partials[name])
        sch.compute_at(scores, tile, preserve_unit_loops=True)
        for name in ("T_softmax_norm", "T_softmax_exp"):
            vectorize_last(sch, blocks[name], bits)
        register_tile_scores(sch, scores, bits)
        return sch


def transpose_keys(sch: s_tir.Schedule, scores: SBlockRV) -> SBlockRV:
    """Copy K [b, j, k] to [b, k, j] ahead of the scores, whose inner loop then reads it contiguously."""
    j = sch.get(scores).iter_vars[2].var
    for index, region in enumerate(sch.get(scores).reads):
        dims = [tirx.analysis.undefined_vars(d.min) for d in region.region]
        if len(dims) == 3 and any(v.same_as(j) for v in dims[1]):
            keys = sch.cache_read(scores, index, "global")
            sch.transform_layout(scores, ("read", index), lambda b, j, k: (b, k, j))
            return keys
    raise ValueError("no key read indexed [b, j, k]")


def inline_copies(sch: s_tir.Schedule, keep: list[SBlockRV]) -> None:
    """Inline the reshapes, scaling and mask addition between the stages (all but `keep` and the last)."""
    kept = {sch.get(b).name_hint for b in keep}
    for block in sch.get_child_blocks(sch.get_sblock("root"))[:-1]:
        if sch.get(block).name_hint not in kept:
            try:
                sch.compute_inline(block)
            except SCHEDULE_FAILURES:
                continue


def schedule_output(sch: s_tir.Schedule, output: SBlockRV, bits: int) -> LoopRV:
    """Tile P V as (batch, row block) in parallel, then a register block of ROWS x lanes over the keys (in
    global scope, a stack array: see schedule_contraction); returns the parallel loop, where the softmax
    stages are computed."""
    b, i, j, k = sch.get_loops(output)
    vec = vector_factor(extent(sch, j), lanes_for(sch, output, bits))
    io, ii = sch.split(i, factors=[None, ROWS])
    jo, ji = sch.split(j, factors=[None, vec])
    sch.reorder(b, io, jo, k, ii, ji)
    tile = sch.fuse(b, io)
    sch.parallel(tile)
    consumers = sch.get_consumers(output)
    if consumers:
        sch.reverse_compute_at(consumers[0], jo, preserve_unit_loops=True)
        vectorize_innermost(sch, consumers[0])
    sch.unroll(ii)
    sch.vectorize(ji)
    vectorize_innermost(sch, sch.decompose_reduction(output, k))
    return tile


def register_tile_scores(sch: s_tir.Schedule, scores: SBlockRV, bits: int) -> None:
    """Scores of the row block in tiles of ROWS x 2 vectors of keys, accumulated in registers over the head
    dimension: each step loads two key vectors and broadcasts ROWS query values."""
    *_, i, j, k = sch.get_loops(scores)
    lanes = lanes_for(sch, scores, bits)
    vec = vector_factor(extent(sch, j), lanes)
    jo, ji = sch.split(j, factors=[None, vec])
    sch.reorder(jo, k, i, ji)
    sch.unroll(i)
    vectorize_by_registers(sch, ji, lanes)
    init = sch.decompose_reduction(scores, k)
    vectorize_innermost(sch, init)
