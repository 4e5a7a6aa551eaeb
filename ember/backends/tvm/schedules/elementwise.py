"""The fallback for every other kernel (elementwise, pools, concat, reductions): each loop nest of the
function runs its outer spatial loops in parallel, and an elementwise nest also vectorizes its innermost."""

from __future__ import annotations

from tvm import s_tir

from ember.backends.tvm.schedules.common import (
    MIN_PARALLEL_ELEMENTS,
    CPURule,
    bound_loops,
    extent,
    iter_kinds,
    schedule_injective,
)


class Fallback(CPURule):
    """Parallel outer loops for any nest; SIMD on the innermost axis of elementwise nests."""

    def schedule(self, sch: s_tir.Schedule, bits: int) -> s_tir.Schedule | None:
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        changed = False
        for block in blocks:
            if "R" in iter_kinds(sch, block):
                changed |= parallel_spatial(sch, block)
            else:
                changed |= schedule_injective(sch, block, bits)
        return sch if changed else None


def parallel_spatial(sch: s_tir.Schedule, block) -> bool:
    """Fuse and parallelize the spatial loops of a reduction nest that come before its first reduction."""
    loops = bound_loops(sch, block)
    if loops is None:
        return False
    kinds = iter_kinds(sch, block)
    n_spatial = len(kinds) - len(kinds.lstrip("S"))
    total = 1
    for loop in loops:
        total *= extent(sch, loop)
    if n_spatial == 0 or total < MIN_PARALLEL_ELEMENTS:
        return False
    spatial = loops[:n_spatial]
    fused = sch.fuse(*spatial) if n_spatial > 1 else spatial[0]
    if extent(sch, fused) < 2:
        return False
    sch.parallel(fused)
    return True
