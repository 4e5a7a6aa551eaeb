"""What Ember's CPU schedule rules share: the target's vector width, a rule base that never lets a failed
schedule escape, loop-nest queries, and the parallel-and-vectorize schedule of an elementwise nest."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.dlight.analysis.common_analysis import get_sblockrealize
from tvm.s_tir.schedule import LoopRV, SBlockRV
from tvm.sym.analyzer import Analyzer
from tvm.target import Target
from tvm.target.codegen import llvm_cpu_has_features

# What TVM raises when a primitive does not apply (ScheduleError is a RuntimeError; tvm_ffi maps the rest).
SCHEDULE_FAILURES = (RuntimeError, ValueError, TypeError, IndexError, AssertionError)
MIN_PARALLEL_ELEMENTS = 2048  # below this a thread-pool launch costs more than the loop
OUTPUT_WORK = 8  # what each output's epilogue and store count for, in multiply-adds or reduction steps


@dataclass(frozen=True)
class Knobs:
    """Parameters of the rules that `ember tune` varies per kernel (ember.backends.tvm.variants); the defaults are
    the rules' own, chosen on whole models."""

    accumulators: int = 0  # vector registers an fp32 register tile accumulates in; 0: the width's default
    k_chunk: int = 256  # reduction steps per pass over the rows of a cache-blocked contraction
    small_k: int = 160  # a 1x1 conv over at most this many input channels is not cache-blocked (conv2d.py)


KNOBS: ContextVar[Knobs] = ContextVar("ember_schedule_knobs", default=Knobs())  # noqa: B039 (frozen)


@contextlib.contextmanager
def knobs(values: Knobs) -> Iterator[None]:
    """Schedule under `values` within the block."""
    token = KNOBS.set(values)
    try:
        yield
    finally:
        KNOBS.reset(token)


def vector_bits(target: Target) -> int:
    """SIMD register width in bits: 512 with AVX-512, 256 with AVX/AVX2, 128 for NEON, SSE and the rest."""
    if target.kind.name != "llvm" or "arm_cpu" in target.keys:
        return 128
    for feature, bits in (("avx512f", 512), ("avx", 256)):
        if llvm_cpu_has_features(feature, target):
            return bits
    return 128


class CPURule(ScheduleRule):
    """A CPU rule that schedules a function completely or returns None (TVM's default lowering keeps it)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        try:
            return self.schedule(s_tir.Schedule(func), vector_bits(target))
        except SCHEDULE_FAILURES:
            return None

    def schedule(self, sch: s_tir.Schedule, bits: int) -> s_tir.Schedule | None:
        raise NotImplementedError


def lanes_for(sch: s_tir.Schedule, block: SBlockRV, bits: int) -> int:
    """Vector lanes for the element type the block writes."""
    return max(bits // sch.get(block).writes[0].source.dtype.bits, 1)


def bound_loops(sch: s_tir.Schedule, block: SBlockRV) -> list[LoopRV] | None:
    """The block's loops when each binds exactly one block iterator, in order, with a constant extent."""
    loops = sch.get_loops(block)
    values = get_sblockrealize(sch, block).iter_values
    if len(loops) != len(values):
        return None
    for loop, value in zip(loops, values):
        stmt = sch.get(loop)
        if not stmt.loop_var.same_as(value) or not isinstance(stmt.extent, tirx.IntImm):
            return None
    return loops


def extent(sch: s_tir.Schedule, loop: LoopRV) -> int:
    return int(sch.get(loop).extent)


def multiply_adds(sch: s_tir.Schedule, block: SBlockRV) -> int:
    """Multiply-adds a contraction block computes: the product of its iterators' extents."""
    return math.prod(int(iv.dom.extent) for iv in sch.get(block).iter_vars)


def work(sch: s_tir.Schedule, block: SBlockRV) -> int:
    """A block's cost for the parallel thresholds: its reduction steps (multiply-adds), each output counting
    OUTPUT_WORK more; a depthwise conv's 9 or a pool's window steps per output are cheap beside the store."""
    ivs = sch.get(block).iter_vars
    outputs = math.prod(int(iv.dom.extent) for iv in ivs if iv.iter_type == tirx.IterVar.DataPar)
    return multiply_adds(sch, block) + OUTPUT_WORK * outputs


def vector_factor(n: int, lanes: int) -> int:
    """Lanes to vectorize an axis of length n by, always a divisor of n: a split with a tail would put a
    predicate in the loop, which TVM's vectorizer turns back into scalar code. Bytes (32 lanes and more) take
    the largest power of two dividing n: LLVM moved an int8 conv's padded input copy over 48 or 144 channels,
    vectorized 48 wide, one byte at a time (270 vpextrb/vpinsrb); 16 wide it is vector code, and those convs
    took 0.95x the time (in-process A/B, 2 threads). Otherwise a half or quarter register that divides n: with
    AVX-512's 16 float lanes, 1000 channels took 25 lanes (16 + 8 + 1, the last one scalar) and SqueezeNet's
    last conv ran 13x as long as with AVX2's 8; a 24-channel max pool, one 24-lane vector, 3.3x."""
    for width in (2 * lanes, lanes):
        if n % width == 0:
            return width
    if lanes >= 32 and n & -n >= 4:
        return n & -n
    part = next((w for w in (lanes // 2, lanes // 4) if w >= 4 and n % w == 0), None)
    if part is not None:
        return part
    return n if n <= 2 * lanes else divisor_at_most(n, 2 * lanes)


def divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def iter_kinds(sch: s_tir.Schedule, block: SBlockRV) -> str:
    kind = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(kind.get(iv.iter_type, "O") for iv in sch.get(block).iter_vars)


def strided_reads(sch: s_tir.Schedule, block: SBlockRV, axis: int) -> bool:
    """Whether iterator `axis` indexes some read outside its last dimension (vectorizing it would gather)."""
    var = sch.get(block).iter_vars[axis].var
    for region in sch.get(block).reads:
        for dim in list(region.region)[:-1]:
            if any(v.same_as(var) for v in tirx.analysis.undefined_vars(dim.min)):
                return True
    return False


def interleaves(sch: s_tir.Schedule, block: SBlockRV, lanes: int) -> bool:
    """Whether a read's last index (simplified over the block's iterator ranges) divides the innermost iterator
    by a constant under `lanes`: every vector of it would gather from several runs of the source, one scalar load
    per lane as TVM vectorizes it. Unrolled, LLVM's SLP vectorizer builds the vectors from short loads and
    shuffles: ShuffleNet's channel shuffles (4 groups interleaved) took 0.50-0.71x the time, the model 0.91-0.92x
    (in-process A/B, 2 threads)."""
    var = sch.get(block).iter_vars[-1].var
    analyzer = Analyzer()
    for iv in sch.get(block).iter_vars:
        analyzer.bind(iv.var, iv.dom)
    divisors: list[int] = []

    def visit(expr):
        if isinstance(expr.b, tirx.IntImm) and any(v.same_as(var) for v in tirx.analysis.undefined_vars(expr.a)):
            divisors.append(int(expr.b.value))
        return expr

    for region in sch.get(block).reads:
        index = analyzer.simplify(region.region[-1].min)
        tvm_ffi.structural_map(index, [(tirx.FloorDiv, visit), (tirx.FloorMod, visit)])
    return any(1 < d < lanes for d in divisors)


def vectorize_innermost(sch: s_tir.Schedule, block: SBlockRV) -> None:
    """Vectorize the block's innermost loop unless it is a single iteration or already vectorized."""
    loop = sch.get_loops(block)[-1]
    if extent(sch, loop) > 1 and sch.get(loop).kind != tirx.ForKind.VECTORIZED:
        sch.vectorize(loop)


def schedule_injective(sch: s_tir.Schedule, block: SBlockRV, bits: int) -> bool:
    """Parallelize the outer loops of a loop nest and vectorize its innermost; False if it does not fit."""
    loops = bound_loops(sch, block)
    if loops is None or "R" in iter_kinds(sch, block):
        return False
    total = math.prod(extent(sch, loop) for loop in loops)
    if tile_transpose(sch, block, loops, bits, parallel=total >= MIN_PARALLEL_ELEMENTS):
        return True
    last = extent(sch, loops[-1])
    factor = vector_factor(last, lanes_for(sch, block, bits))
    outer: list[LoopRV] = list(loops[:-1])
    if factor > 1:
        if factor < last:
            o, i = sch.split(loops[-1], factors=[None, factor])
            outer.append(o)
        else:
            i = loops[-1]
        if interleaves(sch, block, factor):
            sch.unroll(i)
        else:
            sch.vectorize(i)
    else:
        outer.append(loops[-1])
    if outer and total >= MIN_PARALLEL_ELEMENTS:
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        sch.parallel(fused)
    return True


def lane_partials(sch: s_tir.Schedule, block: SBlockRV, bits: int) -> SBlockRV | None:
    """Split a row's max or sum into lane-wise partial results (rfactor) and a final reduction of the lanes:
    a scalar reduction is a chain of dependent operations, one per element. Returns the partial block."""
    row = sch.get_loops(block)[-1]
    lanes = lanes_for(sch, block, bits)
    if extent(sch, row) % lanes or extent(sch, row) == lanes:
        return None
    _, lane = sch.split(row, factors=[None, lanes])
    return sch.rfactor(lane, factor_axis=len(sch.get(block).iter_vars) - 1)


def vectorize_partials(sch: s_tir.Schedule, partial: SBlockRV) -> None:
    """The reduction steps outside, the lanes (the partial buffer's last axis) inside and vectorized, for the
    partial block and its initialization."""
    block = sch.get(partial)
    lane_var, values = block.writes[0].region[-1].min, get_sblockrealize(sch, partial).iter_values
    bound = {sch.get(loop).loop_var: loop for loop in sch.get_loops(partial)}
    lane = next(bound[v] for iv, v in zip(block.iter_vars, values) if iv.var.same_as(lane_var))
    step = next(bound[v] for iv, v in zip(block.iter_vars, values) if iv.iter_type == tirx.IterVar.CommReduce)
    sch.reorder(step, lane)
    sch.vectorize(lane)
    sch.vectorize(sch.get_loops(sch.decompose_reduction(partial, step))[-1])


def vectorize_last(sch: s_tir.Schedule, block: SBlockRV, bits: int) -> None:
    """Vectorize the block's innermost loop in register-sized pieces."""
    loop = sch.get_loops(block)[-1]
    factor = vector_factor(extent(sch, loop), lanes_for(sch, block, bits))
    if factor < extent(sch, loop):
        loop = sch.split(loop, factors=[None, factor])[1]
    sch.vectorize(loop)


def tile_transpose(sch: s_tir.Schedule, block: SBlockRV, loops: list[LoopRV], bits: int, parallel: bool) -> bool:
    """Tile a transpose (its read's innermost index is another output axis than the innermost) over both axes:
    a tile's input rows are read whole while they are in L1. Untiled, each output vector gathered one element
    per cache line, and a line came back from L2 once per element of it."""
    blk = sch.get(block)
    if len(blk.reads) != 1 or len(blk.reads[0].region) < 2:
        return False
    last = blk.reads[0].region[-1]
    ivars = [iv.var for iv in blk.iter_vars]
    found = [i for i, v in enumerate(ivars[:-1]) if last.min.same_as(v)]
    if not found or not (isinstance(last.extent, tirx.IntImm) and last.extent.value == 1):
        return False
    j = found[0]
    ta = vector_factor(extent(sch, loops[-1]), lanes_for(sch, block, bits))
    tb = next((t for t in (16, 8, 4) if extent(sch, loops[j]) % t == 0), 0)
    if ta < 4 or not tb:
        return False
    a_o, a_i = sch.split(loops[-1], factors=[None, ta])
    b_o, b_i = sch.split(loops[j], factors=[None, tb])
    outer = [*loops[:j], b_o, *loops[j + 1 : -1], a_o]
    sch.reorder(*outer, b_i, a_i)
    sch.vectorize(a_i)
    if parallel:
        sch.parallel(sch.fuse(*outer))
    return True
