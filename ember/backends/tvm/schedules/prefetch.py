"""Software prefetch for a contraction's residual epilogue: at the start of each parallel tile, the cache
lines of the residual (an input shaped like the output) and of the output that the tile AHEAD tiles on will
touch are requested, so their misses overlap this tile's reduction instead of stalling the epilogue after it
(the residual is one more stream than a plain conv's; its add was already vectorized, per register tile).
ResNet-50's residual 1x1 convs (Zen 3, one thread, CPU time per kernel, in turns, min of 8 runs, median of 10
turns): 56x56 64->256 0.84-0.90x, 28x28 0.93-0.96x, 14x14 0.94-0.97x, 7x7 1.02x; 0.95x summed.
Also a contraction's weights, a parallel iteration ahead (the Winograd matmuls: winograd.py); in the K loop of a
cache-blocked 1x1 conv, the next K chunk's weights took ResNet-50's parted 1x1 convs to 2.5x the time."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis.common_analysis import get_sblockrealize
from tvm.s_tir.schedule import LoopRV, SBlockRV
from tvm_ffi.structural import structural_map

AHEAD = 2  # tiles; 1 and 4 measured no better
LOCALITY = 3  # llvm.prefetch's: into L1
READ, WRITE = 0, 1
LINE_FLOATS = 16  # float32s per 64-byte cache line


def prefetch_epilogue(sch: s_tir.Schedule, epilogue: SBlockRV, tile: LoopRV) -> s_tir.Schedule:
    """A schedule of the function with the prefetches for tile `tile + AHEAD` (the last tile at most) first in
    `tile`'s body: one per row of the epilogue's register tile and buffer, at the row's first lane."""
    block, loop = sch.get(epilogue), sch.get(tile)
    loops = [sch.get(rv) for rv in sch.get_loops(epilogue)]
    inner = loops[[lp.same_as(loop) for lp in loops].index(True) + 1 :]
    rows = [lp for lp in inner if lp.kind != tirx.ForKind.VECTORIZED]
    fresh = {lp.loop_var: tirx.Var(lp.loop_var.name + "_pf", lp.loop_var.ty) for lp in rows}
    ahead = {loop.loop_var: tirx.min(loop.loop_var + AHEAD, loop.min + loop.extent - 1)}
    lanes = {lp.loop_var: tirx.const(0, lp.loop_var.ty) for lp in inner if lp.kind == tirx.ForKind.VECTORIZED}
    regions = streamed(block, sch.mod["main"].params)
    if len(regions) == 1:  # the output alone: MobileNetV2's depthwise and 1x1 convs 1.0-1.5x the time
        return sch
    bound = dict(zip((iv.var for iv in block.iter_vars), get_sblockrealize(sch, epilogue).iter_values))
    calls = []
    for region, rw in regions:
        index = [_substitute(_substitute(r.min, bound), ahead | lanes | fresh) for r in region.region]
        address = tirx.address_of(tirx.BufferLoad(region.source, index))
        calls.append(tirx.Evaluate(tirx.call_llvm_intrin("void", "llvm.prefetch.p0", address, rw, LOCALITY, 1)))
    nest: tirx.Stmt = tirx.SeqStmt(calls) if len(calls) > 1 else calls[0]
    for row in reversed(rows):
        nest = tirx.For(fresh[row.loop_var], row.min, row.extent, tirx.ForKind.SERIAL, nest)
    return s_tir.Schedule(_prepend(sch.mod["main"], loop, nest))


def masked(sch: s_tir.Schedule, epilogue: SBlockRV) -> bool:
    """Whether the epilogue has masked rows (a tail tile): there the prefetches cost LLVM its unswitching of
    the mask out of the reduction (MobileNetV2's 7x7 160->960 conv, 6-row tiles: 2x the time)."""
    predicate = get_sblockrealize(sch, epilogue).predicate
    return not (isinstance(predicate, tirx.IntImm) and int(predicate.value))


def streamed(block, params) -> list[tuple[object, int]]:
    """The epilogue's regions worth prefetching: arguments read elementwise with the output, and the output."""
    out = block.writes[0]
    shape = [int(d) for d in out.source.shape]

    def residual(region) -> bool:
        same = [int(d) for d in region.source.shape] == shape
        return same and any(region.source.same_as(p) for p in params)  # not the accumulator, a stack array

    return [(r, READ) for r in block.reads if residual(r)] + [(out, WRITE)]


def _substitute(expr: tirx.PrimExpr, vmap: dict) -> tirx.PrimExpr:
    return structural_map(expr, [(tirx.Var, lambda v: next((e for k, e in vmap.items() if k.same_as(v)), v))])


def _prepend(func: tirx.PrimFunc, loop: tirx.For, first: tirx.Stmt) -> tirx.PrimFunc:
    """`func` with `first` before `loop`'s body."""

    def visit(stmt: tirx.For) -> tirx.For:
        if not stmt.loop_var.same_as(loop.loop_var):
            return stmt
        body = tirx.SeqStmt([first, stmt.body])
        return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, annotations=stmt.annotations)

    return func.with_body(structural_map(func.body, [(tirx.For, visit)]))


def prefetch_weights(sch: s_tir.Schedule, block: SBlockRV, tile: LoopRV, ahead: int) -> s_tir.Schedule:
    """A schedule of the function with each reduction step of `block` (a contraction's update, its register
    loops innermost, its weight packed with the lanes last) first requesting the weight lines that parallel
    iteration `tile + ahead` (the last at most) reads at that step."""
    loops = [sch.get(rv) for rv in sch.get_loops(block)]
    outer = sch.get(tile)
    register = [lp for lp in loops if lp.kind in (tirx.ForKind.UNROLLED, tirx.ForKind.VECTORIZED)]
    step = loops[loops.index(register[0]) - 1]
    realize = get_sblockrealize(sch, block)
    bound = dict(zip((iv.var for iv in realize.block.iter_vars), realize.iter_values))
    vmap = {outer.loop_var: tirx.min(outer.loop_var + ahead, outer.min + outer.extent - 1)}
    vmap |= {lp.loop_var: tirx.const(0, lp.loop_var.ty) for lp in register}
    region = _weight_region(realize, register[-1])
    *index, lane = [_substitute(_substitute(r.min, bound), vmap) for r in region.region]
    calls = [
        tirx.Evaluate(
            tirx.call_llvm_intrin(
                "void",
                "llvm.prefetch.p0",
                tirx.address_of(tirx.BufferLoad(region.source, [*index, lane + offset])),
                READ,
                LOCALITY,
                1,
            )
        )
        for offset in range(0, int(region.source.shape[-1]), LINE_FLOATS)
    ]
    return s_tir.Schedule(_prepend(sch.mod["main"], step, tirx.SeqStmt(calls) if len(calls) > 1 else calls[0]))


def _weight_region(realize, lanes: tirx.For):
    """The read, other than the accumulator, whose last index runs along the vectorized loop `lanes`."""
    block = realize.block
    along = [iv.var for iv, value in zip(block.iter_vars, realize.iter_values) if _uses(value, lanes.loop_var)]
    for region in block.reads:
        if not region.source.same_as(block.writes[0].source) and any(_uses(region.region[-1].min, v) for v in along):
            return region
    raise ValueError("no read along the lanes")


def _uses(expr: tirx.PrimExpr, var: tirx.Var) -> bool:
    return any(v.same_as(var) for v in tirx.analysis.undefined_vars(expr))
