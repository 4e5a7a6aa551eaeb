"""The schedule conv2d and matmul share: spatial tiles run in parallel, each accumulating a block of
`rows x lanes` outputs in registers over the whole reduction, then applying the fused epilogue in place."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from tvm import ir, s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV
from tvm.tirx.function import IndexMap

from ember.backends.tvm.schedules.common import (
    KNOBS,
    bound_loops,
    divisor_at_most,
    extent,
    iter_kinds,
    lanes_for,
    schedule_injective,
    vector_factor,
    work,
)
from ember.backends.tvm.schedules.prefetch import masked, prefetch_epilogue

ACCUMULATOR_REGISTERS = {512: 16, 256: 12, 128: 12}  # of 32 (AVX-512), 16 (AVX2, SSE) or 32 (NEON) registers
# A tile of half (or quarter) AVX-512 registers may hold more: SqueezeNet's 1000-channel classifier conv, 5 half
# registers a row, took 4 rows for 200 GFLOP/s where 3 gave 182 (one kernel, 2 threads, Zen 4).
HALF_WIDTH_ACCUMULATORS = {512: 24}
SMALL_REDUCTION = 32  # inputs per output at most, for padding to be computed inline
PREPACK = "meta_schedule.layout_rewrite_preproc"  # the block annotation SplitLayoutRewritePreproc moves out
MIN_PARALLEL_WORK = 1 << 17  # with 256-bit vectors; below this (common.work) a thread-pool launch costs more
# A cache-blocked contraction's rows (pixels) split into this many contiguous parts, outermost in the parallel
# loop: TVM gives each thread a contiguous range of it, so with 2 threads each sweeps its half of the pixels
# over every lane tile, and reads the half the previous kernel's thread wrote (the pixel-major elementwise,
# depthwise and small-K kernels split alike), where lane tiles alone had each read every pixel, half of them
# from the other core's cache: 13 GB/s against 45 GB/s for data it wrote itself (measured here, 0.2-3 MB).
# In-process A/B, whole model, 2 threads, in turns: ResNet-50 0.96-0.98x, MobileNetV2 0.97x.
ROW_PARTS = 2


@dataclass(frozen=True)
class Blocking:
    """Which spatial iterators of the contraction get the SIMD lanes and the register rows."""

    vector_axis: int
    row_axes: tuple[int, ...]  # candidates; the one whose extent divides into the most rows wins
    weights_by_lanes: bool = False  # the weight is read along the lane axis: keep its tile outermost for reuse
    cache_block: bool = False  # parallel lane tiles, each over all rows in K chunks (weights chunk in L1)
    merge_rows: int | None = None  # merge this spatial iterator with the next (NHWC pixels) before blocking
    pixels_outer: bool = False  # lane tiles inside the pixel loops: inputs stream in order (tiny weights)
    one_vector: bool = False  # lane tiles of one register: more rows fit (no input is shared by lanes)
    exact_rows: bool = False  # rows a divisor of the axis where one is at least half the register limit
    lane_period: int | None = None  # lane tiles divide this (a grouped conv's outputs per group)


def schedule_contraction(
    sch: s_tir.Schedule, block: SBlockRV, blocking: Blocking, bits: int, prefetch: bool = True
) -> s_tir.Schedule:
    """Tile `block` (spatial iterators first, then reductions) and fold its prologue and epilogue into it.
    The accumulator stays in global scope: compacted under the parallel loop it is a stack array LLVM keeps
    in registers, where "local" scope became a TVMBackendAllocWorkspace call per parallel iteration.
    `prefetch`: return a schedule of the function with the epilogue's streams prefetched (see prefetch.py),
    for callers that schedule nothing after it."""
    kinds = iter_kinds(sch, block)
    if "O" in kinds or "R" not in kinds or kinds.lstrip("S").strip("R"):
        raise ValueError("not a spatial-then-reduction contraction")
    inline_prologue(sch, block, bits)
    epilogue = gather_epilogue(sch, block)
    if blocking.merge_rows is not None:
        merge_axes(sch, (block, epilogue), blocking.merge_rows)
    parted = (
        blocking.cache_block
        and blocking.merge_rows is not None
        and int(sch.get(block).iter_vars[blocking.merge_rows].dom.extent) % ROW_PARTS == 0
    )
    if parted:
        blocking = split_rows(sch, (block, epilogue), blocking)
    n_spatial = iter_kinds(sch, block).count("S")
    lanes = lanes_for(sch, block, bits)
    loops = bound_loops(sch, block)
    if loops is None:
        raise ValueError("loops do not map one-to-one onto block iterators")
    span = math.gcd(extent(sch, loops[blocking.vector_axis]), blocking.lane_period or 0)
    vec_len = lane_tile(span, lanes, blocking.one_vector)
    if blocking.cache_block and not parted and extent(sch, loops[blocking.vector_axis]) // vec_len < ROW_PARTS:
        # its lane tiles would be its only parallel loop: SqueezeNet's squeeze convs (one lane tile, 729 or 3025
        # pixels) took as long on 2 threads as on 1 (0.120 against 0.121 ms); now 0.059 against 0.112
        blocking = replace(blocking, cache_block=False)
    if blocking.weights_by_lanes:
        prepack_weight(sch, block, blocking.vector_axis, vec_len)
    limit = row_limit(vec_len, lanes, bits)
    rows, row_axis = 1, None
    for axis in blocking.row_axes:
        if row_factor(extent(sch, loops[axis]), limit, blocking.exact_rows) > rows:
            rows, row_axis = row_factor(extent(sch, loops[axis]), limit, blocking.exact_rows), axis
    outer, inner, micro = [], [], []
    for axis, loop in enumerate(loops[:n_spatial]):
        factor = vec_len if axis == blocking.vector_axis else rows if axis == row_axis else None
        if factor is None:
            outer.append(loop)
            continue
        o, i = sch.split(loop, factors=[None, factor])
        inner.append((axis, i))
        if blocking.cache_block and axis == row_axis:
            micro.append(o)
            continue
        first = blocking.weights_by_lanes and axis == blocking.vector_axis and not blocking.pixels_outer
        outer.insert(0 if first else len(outer), o)
    inner.sort(key=lambda item: item[0] == blocking.vector_axis)  # the vector axis innermost
    reductions = loops[n_spatial:]
    if micro:  # K in chunks outside the register tiles: a chunk of the lane tile's weights stays in L1
        chunk, reductions[-1] = sch.split(
            reductions[-1], factors=[None, divisor_at_most(extent(sch, reductions[-1]), KNOBS.get().k_chunk)]
        )
        reductions.insert(0, chunk)
    if parted:  # the row parts (split_rows put them at the merged rows' index) outermost
        outer.insert(0, outer.pop(outer.index(loops[blocking.merge_rows])))
    sch.reorder(*outer, *reductions[:1], *micro, *reductions[1:], *(loop for _, loop in inner))
    tile = sch.fuse(*outer)
    if extent(sch, tile) > 1 and work(sch, block) >= MIN_PARALLEL_WORK * bits // 256:  # narrower SIMD: slower
        sch.parallel(tile)
    sch.reverse_compute_at(epilogue, tile, preserve_unit_loops=True)
    vectorize_by_registers(sch, sch.get_loops(epilogue)[-1], lanes)
    vectorize_by_registers(sch, inner[-1][1], lanes)
    if len(inner) > 1 and rows > 1:
        sch.unroll(inner[0][1])
    vectorize_by_registers(sch, sch.get_loops(sch.decompose_reduction(block, reductions[0]))[-1], lanes)
    if not prefetch or extent(sch, tile) == 1 or masked(sch, epilogue):
        return sch
    return prefetch_epilogue(sch, epilogue, tile)


def row_limit(vec_len: int, lanes: int, bits: int) -> int:
    """Register rows a tile of `vec_len` lanes may have: the accumulator registers over its registers per row."""
    width = register_width(vec_len, lanes)
    registers = HALF_WIDTH_ACCUMULATORS.get(bits) if width < lanes else None
    return (KNOBS.get().accumulators or registers or ACCUMULATOR_REGISTERS[bits]) // -(-vec_len // width)


def matmul_row_limit(columns: int, bits: int) -> int:
    """`row_limit` of a float32 matmul's tile over `columns` output columns with `bits`-wide vectors."""
    lanes = max(bits // 32, 1)
    return row_limit(lane_tile(columns, lanes), lanes, bits)


def register_width(n: int, lanes: int) -> int:
    """Lanes per register for a tile of n lanes: the full width where it divides n, else half of it where that
    does (12 floats with AVX2: 3 xmm registers), else a quarter of an AVX-512 register (12 floats: 3 xmm, not
    one zmm LLVM pads), else n (one vector LLVM pads)."""
    widths = (w for w in (lanes, lanes // 2, lanes // 4) if w >= min(4, lanes // 2))
    return next((w for w in widths if w > 1 and n % w == 0), n)


def vectorize_by_registers(sch: s_tir.Schedule, loop: LoopRV, lanes: int) -> None:
    """Vectorize `loop`; a width of 3 or 5 registers (or half-registers) is unrolled over single ones instead,
    as LLVM widens a vector of 24 or 40 floats to the next power of two and shuffles (measured 4x slower), and
    a 1-D conv over 36 channels in lane tiles of 12 ran at 5.7 GMAC/s, as 3 xmm registers at 22 (one thread)."""
    n = extent(sch, loop)
    if n <= 1 or sch.get(loop).kind == tirx.ForKind.VECTORIZED:
        return
    width = register_width(n, lanes)
    whole_registers_pow2 = width == lanes and (n // width) & (n // width - 1) == 0  # LLVM splits those itself
    if width == n or whole_registers_pow2:
        sch.vectorize(loop)
        return
    registers, loop = sch.split(loop, factors=[None, width])
    sch.unroll(registers)
    sch.vectorize(loop)


def merge_axes(sch: s_tir.Schedule, blocks: tuple[SBlockRV, ...], axis: int) -> None:
    """Merge iterators `axis` and `axis + 1` of each block, and those axes of the first block's result, into
    one (H x W pixels as one row axis)."""
    width = int(sch.get(blocks[0]).iter_vars[axis + 1].dom.extent)
    relayout(sch, blocks, lambda i: (*i[:axis], i[axis] * width + i[axis + 1], *i[axis + 2 :]))


def split_rows(sch: s_tir.Schedule, blocks: tuple[SBlockRV, ...], blocking: Blocking) -> Blocking:
    """Split the merged rows iterator of each block, and that axis of the first block's result, into
    (ROW_PARTS, rest): an iterator of its own, so each part's register rows end in a masked tail of their own
    and the epilogue covers the part's rows exactly (a split loop left the epilogue of a part's last tile
    writing the next part's first rows, racing the thread that computed them). Returns the blocking with its
    axes renumbered."""
    axis = blocking.merge_rows
    size = int(sch.get(blocks[0]).iter_vars[axis].dom.extent) // ROW_PARTS
    relayout(sch, blocks, lambda i: (*i[:axis], i[axis] // size, i[axis] % size, *i[axis + 1 :]))
    after = lambda a: a + (a >= axis)  # noqa: E731
    return replace(blocking, vector_axis=after(blocking.vector_axis), row_axes=tuple(map(after, blocking.row_axes)))


def relayout(sch: s_tir.Schedule, blocks: tuple[SBlockRV, ...], index: Callable[[tuple], tuple]) -> None:
    """Map the iterators of each block, and the first block's result buffer, through `index` (a function of
    the index tuple): the accumulator then follows the iterators, its accesses affine in them."""

    def index_map(ndim: int) -> IndexMap:
        return IndexMap.from_func(lambda *i: index(i), ndim=ndim)

    for block in blocks:
        sch.transform_block_layout(block, index_map(len(sch.get(block).iter_vars)))
    sch.transform_layout(blocks[0], ("write", 0), index_map(len(sch.get(blocks[0]).writes[0].source.shape)))


def lane_tile(n: int, lanes: int, one_vector: bool = False) -> int:
    """Lanes of the register tile along an axis of length n: two vectors where they divide n; else the
    widest of 5 or 3 vectors (or half or quarter ones, where only those divide n) that divides it (1000 = 25 x 40),
    which load each input once per 3-5 weight vectors, where a single vector (8 rows x 1) needs one broadcast
    per FMA. `one_vector`: one where it divides."""
    if one_vector and n % lanes == 0:
        return lanes
    factor = vector_factor(n, lanes)
    if factor not in (lanes, lanes // 2, lanes // 4) or factor < 4:
        return factor
    return next((v * factor for v in (5, 3) if n % (v * factor) == 0), factor)


def row_factor(n: int, limit: int, exact: bool = False) -> int:
    """Rows per register block: a divisor of n near `limit` (`exact`: at least half of it), else balanced
    blocks with a short last one (its predicate is the same for every lane, so the row's vector code stays
    vector)."""
    d = divisor_at_most(n, limit)
    if d == n or 4 * d >= 3 * limit or (exact and 2 * d >= limit):
        return d
    blocks = -(-n // limit)
    return -(-n // blocks)


def prepack_weight(sch: s_tir.Schedule, block: SBlockRV, vector_axis: int, vec_len: int) -> None:
    """Repack a constant weight whose last dimension runs along the lanes as [N / vec_len, ..., vec_len]:
    the reduction then streams it contiguously instead of one cache line (and page) per step. The packing
    block is split into its own function and folded at compile time (see `schedule_passes`)."""
    func = sch.mod["main"]
    free = [func.params[int(i)] for i in (func.attrs or {}).get("layout_free_buffers", [])]
    var = sch.get(block).iter_vars[vector_axis].var
    for index, region in enumerate(sch.get(block).reads):
        dims = [tirx.analysis.undefined_vars(d.min) for d in region.region]
        if not any(region.source.same_as(b) for b in free) or len(dims) < 2:
            continue
        if [v.same_as(var) for v in dims[-1]] == [True] and not any(var.same_as(v) for d in dims[:-1] for v in d):
            packed = sch.cache_read(block, index, "global")
            sch.transform_layout(block, ("read", index), lambda *i: (i[-1] // vec_len, *i[:-1], i[-1] % vec_len))
            sch.annotate(packed, PREPACK, True)
            return


def inline_prologue(sch: s_tir.Schedule, block: SBlockRV, bits: int) -> None:
    """Inline producers that only copy (a zero-width pad, a layout transpose before the padding: stem.py), and
    padding where each output reduces over few inputs (depthwise): a padded copy would cost more than the
    convolution; other padding gets its own parallel loop, keeping the bounds tests out of the reduction."""
    reduction = 1
    for iv in sch.get(block).iter_vars:
        reduction *= int(iv.dom.extent) if iv.iter_type == tirx.IterVar.CommReduce else 1
    for producer in sch.get_producers(block):
        for earlier in sch.get_producers(producer):
            if copies(sch, earlier):
                sch.compute_inline(earlier)
        if copies(sch, producer) or reduction <= SMALL_REDUCTION:
            sch.compute_inline(producer)
        else:
            schedule_injective(sch, producer, bits)


def copies(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    """Whether `block` only copies (a transpose, a zero-width pad): no arithmetic, no bounds test."""
    body = sch.get(block).body
    return isinstance(body, tirx.BufferStore) and isinstance(body.value, ir.TensorLoad)


def gather_epilogue(sch: s_tir.Schedule, block: SBlockRV) -> SBlockRV:
    """Inline the elementwise blocks after the contraction into the last one, which is returned; a
    contraction that writes the output directly gets a cache stage to serve as the epilogue."""
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    after = blocks[[sch.get(b).same_as(sch.get(block)) for b in blocks].index(True) + 1 :]
    if not after:
        return sch.cache_write(block, 0, "global")
    for b in after[:-1]:
        sch.compute_inline(b)
    if len(sch.get_consumers(block)) != 1:
        raise ValueError("the contraction's result is used outside its epilogue")
    return after[-1]
