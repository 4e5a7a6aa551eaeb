"""Int8 conv2d and dense (ember/backends/tvm/quant_rules.py's packed kernels): parallel tiles of rows x output-
channel blocks, int32 accumulators in registers, the innermost 8 x 4 block of a step tensorized with the target's
dot-product instruction, requantization fused after the reduction.

x86 with AVX2 and u8 activations: vpmaddubsw (u8 x s8 pairs summed in int16, exact while |w0| + |w1| <= 128,
which the lowering checks) then vpmaddwd by ones into int32; with AVX-512 VNNI (and VL) or AVX-VNNI: vpdpbusd
on ymm, 4 u8 x s8 products added into each int32 lane exactly, so weights over the pair limit take it too.
aarch64 with +dotprod and i8 activations: sdot (4 x 4 int8 -> int32 per lane); aarch64 without it: TVM's NEON
smull/saddlp intrinsic. Anything else (i8 activations on x86, weights over the pair limit without VNNI) keeps
the same blocking with the channel block vectorized in int32."""

from __future__ import annotations

import functools

from tvm import s_tir, tirx
from tvm.s_tir import TensorIntrin
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.dlight.analysis.common_analysis import get_sblockrealize
from tvm.s_tir.schedule import LoopRV, SBlockRV
from tvm.script import tirx as T
from tvm.target import Target
from tvm.target.codegen import llvm_cpu_has_features

from ember.backends.tvm.quant_rules import GROUPED, PACKED, PACKED_DENSE
from ember.backends.tvm.schedules.common import (
    SCHEDULE_FAILURES,
    CPURule,
    extent,
    multiply_adds,
    schedule_injective,
    vector_bits,
    vectorize_innermost,
)
from ember.backends.tvm.schedules.contraction import ROW_PARTS, gather_epilogue, schedule_contraction
from ember.backends.tvm.schedules.conv2d import BLOCKING, DEPTHWISE_NHWC

PACKED_NAMES = (PACKED, PACKED_DENSE)  # their "_wide" variants never take the AVX2 intrinsic (VNNI: any)
ACCUMULATORS = {"x86": 12, "avx512": 24, "arm": 12}  # blocks of 8 int32 lanes: of 16 ymm, 32 ymm, 32 NEON q
MAX_CHANNEL_BLOCKS = 4
MIN_PARALLEL_MACS = 1 << 18  # below this a thread-pool launch costs more than the kernel's whole sum
AVX2_DOT_8x4 = "ember_dot_8x4_u8i8i32_avx2"
VNNI_DOT_8x4 = "ember_dot_8x4_u8i8i32_vnni"
SDOT_4x4 = "ember_dot_4x4_i8i8i32_sdot"
GROUPED_BLOCKING = BLOCKING["group_conv2d_nhwc"]  # fp32's: channel tiles inside the pixel loops


def _dot_desc(lanes: int, a_dtype: str):
    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), a_dtype, offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


@T.prim_func(s_tir=True)
def dot_8x4_u8i8i32_avx2(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 8), dtype="uint8x32"),
                B.vload([0, 0], "int8x32"),
                dtype="int16x16",
            ),
            T.int16x16(1),
            dtype="int32x8",
        )


def _dot_accumulate(intrinsic: str, lanes: int, a_dtype: str):
    """C += A's 4 bytes (broadcast) dotted with each of B's `lanes` rows, by one LLVM intrinsic taking
    (C, A bytes, B bytes): VNNI vpdpbusd on ymm, ARM sdot. From LLVM 20 the byte operands are <N x i8>."""
    acc, as_bytes = f"int32x{lanes}", f"int8x{lanes * 4}"

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), a_dtype, offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(intrinsic),
                C.vload([0], acc),
                T.reinterpret(
                    T.broadcast(T.reinterpret(A.vload([0], a_dtype + "x4"), dtype="int32"), lanes), dtype=as_bytes
                ),
                B.vload([0, 0], as_bytes),
                dtype=acc,
            )

    return impl


@functools.cache
def registered_intrinsics() -> dict[str, str]:
    """Register Ember's dot-product intrinsics on first use (parsing TVMScript is slow; importing TVM's
    tensor_intrin package parses every intrinsic it has, CUDA's included, for minutes)."""
    TensorIntrin.register(AVX2_DOT_8x4, _dot_desc(8, "uint8"), dot_8x4_u8i8i32_avx2, override=True)
    vnni = _dot_accumulate("llvm.x86.avx512.vpdpbusd.256", 8, "uint8")
    TensorIntrin.register(VNNI_DOT_8x4, _dot_desc(8, "uint8"), vnni, override=True)
    sdot = _dot_accumulate("llvm.aarch64.neon.sdot.v4i32.v16i8", 4, "int8")
    TensorIntrin.register(SDOT_4x4, _dot_desc(4, "int8"), sdot, override=True)
    return {"avx2": AVX2_DOT_8x4, "vnni": VNNI_DOT_8x4, "sdot": SDOT_4x4}


def dot_intrinsic(target: Target, name: str, x_dtype: str) -> tuple[str, int] | None:
    """(intrinsic, output lanes it covers) for this target and input type, or None for the int32 fallback."""
    arm = "aarch64" in str(target.attrs.get("mtriple", "")) or "arm_cpu" in target.keys
    if arm and x_dtype == "int8" and bool(target.attrs.get("feature.has_dotprod", False)):
        return registered_intrinsics()["sdot"], 4
    if arm or x_dtype != "uint8":
        return None
    if _packed(name) and has_vnni(target):
        return registered_intrinsics()["vnni"], 8
    if _packed(name) and "_wide" not in name and llvm_cpu_has_features("avx2", target):
        return registered_intrinsics()["avx2"], 8
    return None


def has_vnni(target: Target) -> bool:
    """Whether vpdpbusd exists on ymm registers: AVX-512 VNNI with VL (Cascade Lake on), or AVX-VNNI."""
    vnni512 = llvm_cpu_has_features("avx512vnni", target) and llvm_cpu_has_features("avx512vl", target)
    return vnni512 or llvm_cpu_has_features("avxvnni", target)


class Int8Packed(ScheduleRule):
    """Schedules a packed int8 conv2d/dense kernel; other kernels are left to the next rule."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        blocks = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if _packed(sch.get(b).name_hint)]
        if not blocks or (len(blocks) > 1 and not sch.get(blocks[0]).name_hint.startswith(PACKED_DENSE)):
            return None
        try:
            for block in blocks:  # several: a dense chain (quant_dense), each layer then its own epilogue
                x_dtype = str(sch.get(block).reads[0].source.dtype)
                schedule_packed(sch, block, dot_intrinsic(target, sch.get(block).name_hint, x_dtype), target)
            return sch
        except SCHEDULE_FAILURES:
            return None


def _packed(name: str) -> bool:
    return any(name.startswith(p) for p in PACKED_NAMES)


def register_block(rows: int, blocks: int, budget: int, multiple: int = 1) -> tuple[int, int]:
    """(rows, channel blocks) dividing their extents with rows x blocks <= budget, rows a multiple of `multiple`
    (a fused pool's window): the most accumulators, then the most even split (each row's input broadcast and
    each block's weight load feed the others)."""
    best = (0, 0, multiple, 1)
    for q in range(1, min(blocks, MAX_CHANNEL_BLOCKS) + 1):
        fits = [d for d in range(multiple, min(rows, budget // q) + 1, multiple) if rows % d == 0]
        if blocks % q or not fits:
            continue
        r = max(fits)
        best = max(best, (r * q, -abs(r - q), r, q))
    return best[2], best[3]


def pool_window(sch: s_tir.Schedule, block: SBlockRV, epilogue: SBlockRV) -> int:
    """k of a conv's fused k x k max pool (qconv2d's max_pool): its accumulator's rows per epilogue row; else 1."""
    acc, out = (sch.get(b).writes[0].source.shape for b in (block, epilogue))
    if len(acc) != 5 or len(out) != 4:
        return 1
    return int(acc[1]) // int(out[1])


def schedule_packed(sch: s_tir.Schedule, block: SBlockRV, intrin: tuple[str, int] | None, target: Target):
    """Tile (spatial..., row, channel block, lane; reductions..., depth 4), tensorize or vectorize the lanes.
    The accumulator stays in global scope: compacted under the parallel loop it is a constant-size stack array
    LLVM keeps in registers, where "local" scope became a TVMBackendAllocWorkspace call per iteration."""
    bits = vector_bits(target)
    for producer in sch.get_producers(block):
        schedule_injective(sch, producer, bits)
    epilogue = _chain_epilogue(sch, block) or gather_epilogue(sch, block)
    loops = sch.get_loops(block)
    n_red = sum(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)
    spatial, reductions = loops[: len(loops) - n_red], loops[len(loops) - n_red :]
    *outer, row, chan, lane = spatial
    budget = ACCUMULATORS["avx512" if bits >= 512 else "x86" if bits >= 256 else "arm"]
    # A fused k x k pool: a tile covers whole windows, its k image rows one after the other, each over the
    # register rows (a multiple of k), so the epilogue takes each window's max from the tile's own sums.
    window = pool_window(sch, block, epilogue)
    window_rows = []
    if window > 1:
        outer[-1], window_row = sch.split(outer[-1], factors=[None, window])
        window_rows.append(window_row)
    r, q = register_block(extent(sch, row), extent(sch, chan), budget, window)
    row_o, row_i = sch.split(row, factors=[None, r])
    chan_o, chan_i = sch.split(chan, factors=[None, q])
    depth = reductions[-1]
    # Halves of the image rows outermost, as for fp32 (contraction.ROW_PARTS): MobileNetV2 int8 took 0.77-0.79x
    # the time (in-process A/B, 2 threads). The split is exact and rows divide the width, so no tile's
    # epilogue reaches into the other half.
    parts = []
    if outer and extent(sch, outer[-1]) % ROW_PARTS == 0:
        part, outer[-1] = sch.split(outer[-1], factors=[ROW_PARTS, None])
        parts.append(part)
    if intrin is None:
        sch.reorder(*parts, chan_o, *outer, row_o, *window_rows, *reductions, row_i, chan_i, lane)
    else:
        sch.reorder(*parts, chan_o, *outer, row_o, *window_rows, *reductions[:-1], row_i, chan_i, lane, depth)
    tile = sch.fuse(*parts, chan_o, *outer, row_o)
    if extent(sch, tile) > 1 and multiply_adds(sch, block) >= MIN_PARALLEL_MACS:
        sch.parallel(tile)
    sch.reverse_compute_at(epilogue, tile, preserve_unit_loops=True)
    _vectorize_tail(sch, epilogue, max(bits // 32, 4))
    unroll_serial(sch, sch.get_loops(epilogue)[1:-1])
    sch.unroll(row_i)
    sch.unroll(chan_i)
    for loop in window_rows:
        sch.unroll(loop)
    init = sch.decompose_reduction(block, reductions[0])
    vectorize_innermost(sch, init)
    if intrin is None:
        sch.vectorize(lane)
    else:
        name, width = intrin
        if width < extent(sch, lane):
            lane_o, lane = sch.split(lane, factors=[None, width])
            sch.unroll(lane_o)
        sch.tensorize(lane, name)
    return sch


def _chain_epilogue(sch: s_tir.Schedule, block: SBlockRV) -> SBlockRV | None:
    """The requantize block of a dense chain's layer that another layer follows (the block between the two), else
    None: the layers after it are no epilogue of it."""
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    i = [sch.get(b).same_as(sch.get(block)) for b in blocks].index(True)
    nxt = next((j for j in range(i + 1, len(blocks)) if _packed(sch.get(blocks[j]).name_hint)), None)
    if nxt is None:
        return None
    if nxt != i + 2:
        raise ValueError("a dense chain's layer has more than its requantize before the next")
    return blocks[i + 1]


def _vectorize_tail(sch: s_tir.Schedule, block: SBlockRV, lanes: int) -> None:
    """Vectorize the epilogue's channel loop by at most `lanes` int32 lanes, a power of two dividing its extent,
    when the extent is a constant (a partial channel block is not): a 24-lane vector of int64 products was
    scalarized into inserts and extracts. With AVX-512's 16 lanes, 3 channel blocks (24) take 8: MobileNetV2's
    1x1 expansions had run 4.5x as long as with AVX2's 8."""
    loop: LoopRV = sch.get_loops(block)[-1]
    if not isinstance(sch.get(loop).extent, tirx.IntImm):
        return
    n = extent(sch, loop)
    while lanes > 1 and n % lanes:
        lanes //= 2
    if n > lanes > 1:
        _, loop = sch.split(loop, factors=[None, lanes])
    sch.vectorize(loop)


class Int8Grouped(CPURule):
    """Grouped and depthwise int8 conv2d (NHWC): the Conv2D blocking on an int32 accumulator, lanes along channels
    (depthwise: fp32's one-vector tiles); the requantization's loops over the register tile are unrolled, so it
    reads the accumulators in registers (as a loop over the tile's pixels it read them back from the stack:
    MobileNetV2's depthwise kernels took 1.03-1.30x the time)."""

    def schedule(self, sch: s_tir.Schedule, bits: int) -> s_tir.Schedule | None:
        blocks = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint == GROUPED]
        if len(blocks) != 1:
            return None
        depthwise = int(sch.get(blocks[0]).iter_vars[6].dom.extent) == 1
        schedule_contraction(sch, blocks[0], DEPTHWISE_NHWC if depthwise else GROUPED_BLOCKING, bits, prefetch=False)
        update = sch.get_sblock(GROUPED + "_update")
        if depthwise:
            _unroll_taps(sch, update)
        sch.set_scope(sch.get_sblock(GROUPED + "_init"), 0, "global")  # a stack array, see schedule_packed
        epilogue = sch.get_child_blocks(sch.get_sblock("root"))[-1]
        unroll_serial(sch, sch.get_loops(epilogue)[1:])
        return sch


def unroll_serial(sch: s_tir.Schedule, loops: list[LoopRV]) -> None:
    """Unroll the serial loops among `loops`, an epilogue's loops over the register tile: it then reads the
    accumulators in registers, not back from the stack."""
    for loop in loops:
        if sch.get(loop).kind == tirx.ForKind.SERIAL:
            sch.unroll(loop)


def _unroll_taps(sch: s_tir.Schedule, block: SBlockRV) -> None:
    """Unroll a depthwise kernel's taps (its reduction loops) around the register tile: LLVM then widens each
    input pixel once per tile row (10 loads for 8 pixels x 3 taps) where the tap loop widened it per tap, and
    vpmovzxbd is the kernel's busiest instruction on Zen 3. MobileNetV2's depthwise kernels (one thread,
    alternating): 0.65-0.80x the time."""
    realize = get_sblockrealize(sch, block)
    taps = [v for iv, v in zip(realize.block.iter_vars, realize.iter_values) if iv.iter_type == tirx.IterVar.CommReduce]
    for loop in sch.get_loops(block):
        if any(sch.get(loop).loop_var.same_as(v) for v in taps):
            sch.unroll(loop)
