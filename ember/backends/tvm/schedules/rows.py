"""Row-wise kernels (layer norm, RMS norm, softmax over the last axis): reductions along each row feeding
an elementwise output of the same rows, scheduled as one parallel loop over rows."""

from __future__ import annotations

import math

from tvm import s_tir

from ember.backends.tvm.schedules.common import (
    MIN_PARALLEL_ELEMENTS,
    CPURule,
    bound_loops,
    extent,
    iter_kinds,
    lane_partials,
    vectorize_last,
    vectorize_partials,
)


class RowWise(CPURule):
    """Per row, in one parallel task while the row is in L1: each reduction as lane-wise partials over
    vectors of the row (a scalar reduction is a chain of dependent operations), then the output
    vectorized; TVM's layer norm was four parallel loops with scalar sums."""

    def schedule(self, sch: s_tir.Schedule, bits: int) -> s_tir.Schedule | None:
        *producers, last = sch.get_child_blocks(sch.get_sblock("root"))
        reductions = [b for b in producers if "R" in iter_kinds(sch, b)]
        loops = bound_loops(sch, last)
        if not reductions or loops is None or len(loops) < 2 or iter_kinds(sch, last).count("R"):
            return None
        if math.prod(extent(sch, loop) for loop in loops) < MIN_PARALLEL_ELEMENTS:
            return None
        if any(iter_kinds(sch, b) != "S" * (len(loops) - 1) + "R" for b in reductions):
            return None
        partials = [lane_partials(sch, b, bits) for b in reductions]
        rows = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        sch.parallel(rows)
        for block in reversed(sch.get_child_blocks(sch.get_sblock("root"))[:-1]):
            sch.compute_at(block, rows, preserve_unit_loops=True)
        for partial in partials:
            if partial is not None:
                vectorize_partials(sch, partial)
        vectorize_last(sch, last, bits)
        return sch
