"""The fallback for every other kernel (elementwise, pools, concat, reductions): a chain of elementwise nests
becomes one nest, each loop nest left runs its outer spatial loops in parallel, and an elementwise nest also
vectorizes its innermost."""

from __future__ import annotations

from tvm import ir, s_tir, tirx
from tvm.s_tir.schedule import SBlockRV

from ember.backends.tvm.quant_rules import DEQUANTIZE
from ember.backends.tvm.schedules.common import (
    MIN_PARALLEL_ELEMENTS,
    OUTPUT_WORK,
    SCHEDULE_FAILURES,
    CPURule,
    bound_loops,
    extent,
    iter_kinds,
    lanes_for,
    schedule_injective,
    strided_reads,
    vector_factor,
    vectorize_innermost,
    work,
)

IF_THEN_ELSE = ir.Op.get("prim.if_then_else")


class Fallback(CPURule):
    """Parallel outer loops for any nest; SIMD on the innermost axis of elementwise nests and pools."""

    def schedule(self, sch: s_tir.Schedule, bits: int) -> s_tir.Schedule | None:
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            if "R" in iter_kinds(sch, block):
                inline_padding(sch, block)
        blocks = inline_moves(sch, sch.get_child_blocks(sch.get_sblock("root")))
        if not any(sch.get(b).name_hint == DEQUANTIZE for b in blocks):
            blocks = inline_elementwise(sch, blocks)
        changed = False
        for block in blocks:
            if "R" in iter_kinds(sch, block):
                changed |= parallel_spatial(sch, block, bits)
            else:
                changed |= schedule_injective(sch, block, bits)
        return sch if changed else None


def inline_padding(sch: s_tir.Schedule, block: SBlockRV) -> None:
    """Read a pool's input through its padding condition instead of a padded copy: the copy is a pass over
    the whole input, which costs more than the window's bounds tests."""
    for producer in sch.get_producers(block):
        body = sch.get(producer).body
        value = body.value if isinstance(body, tirx.BufferStore) else None
        if isinstance(value, ir.Call) and value.op.same_as(IF_THEN_ELSE) and isinstance(value.args[1], ir.TensorLoad):
            sch.compute_inline(producer)


def inline_moves(sch: s_tir.Schedule, blocks: list[SBlockRV]) -> list[SBlockRV]:
    """Inline the nests that only move data (a transpose) into the elementwise nest after them, which then reads
    the source where it is: MobileNetV2's int8 input, NCHW floats transposed into a buffer, then quantized from
    it to NHWC bytes, took 0.109 ms, transposed as it is quantized 0.048 ms (224 x 224 x 3, 1 thread)."""

    def only_moves(block: SBlockRV, after: SBlockRV) -> bool:
        body = sch.get(block).body
        elementwise = "R" not in iter_kinds(sch, block) + iter_kinds(sch, after)
        return elementwise and isinstance(body, tirx.BufferStore) and isinstance(body.value, ir.TensorLoad)

    return _inline_where(sch, blocks, only_moves)


def inline_elementwise(sch: s_tir.Schedule, blocks: list[SBlockRV]) -> list[SBlockRV]:
    """Inline each elementwise nest into the elementwise nests that read it, so a fused chain is one pass over
    memory, not a pass, a buffer and a thread-pool launch per op. In-process A/B, 2 threads: DenseNet-121 (batch
    norm and ReLU before each conv) 0.74x the time, ShuffleNet (bias, ReLU and channel shuffle after its grouped
    convs) 0.89x; Inception v2, SqueezeNet, BERT within 1%; ResNet-50 and MobileNetV2 have no such kernel.
    LLVM contracts a multiply and an add in one nest into a fused multiply-add, so a kernel that dequantizes
    is left as it is: the float ops of a quantized graph stay bit-exact with the interpreter, which rounds
    after each op."""

    def read_once(block: SBlockRV, _after: SBlockRV) -> bool:
        consumers = sch.get_consumers(block)
        elementwise = "R" not in iter_kinds(sch, block) and bool(consumers)
        return elementwise and all(_reads_one_element(sch, c, block) for c in consumers)

    return _inline_where(sch, blocks, read_once)


def _inline_where(sch: s_tir.Schedule, blocks: list[SBlockRV], fits) -> list[SBlockRV]:
    """Inline each block but the last where `fits(block, the block after it)` and TVM allows it; the root's
    blocks after, or `blocks` if none was inlined."""
    inlined = False
    for block, after in zip(blocks, blocks[1:]):
        if not fits(block, after):
            continue
        try:
            sch.compute_inline(block)
            inlined = True
        except SCHEDULE_FAILURES:
            continue
    return sch.get_child_blocks(sch.get_sblock("root")) if inlined else blocks


def _reads_one_element(sch: s_tir.Schedule, consumer: SBlockRV, producer: SBlockRV) -> bool:
    """Whether elementwise `consumer` reads one element of `producer`'s output per element it writes: inlined
    into a stencil (a resize's neighbours) the producer would be computed again for each read."""
    if "R" in iter_kinds(sch, consumer):
        return False
    buffer = sch.get(producer).writes[0].source
    regions = [r.region for r in sch.get(consumer).reads if r.source.same_as(buffer)]
    return all(isinstance(d.extent, tirx.IntImm) and int(d.extent) == 1 for region in regions for d in region)


def parallel_spatial(sch: s_tir.Schedule, block: SBlockRV, bits: int) -> bool:
    """Fuse and parallelize the spatial loops of a reduction nest that come before its first reduction;
    an innermost spatial axis that is contiguous in every read (channels of an NHWC pool) moves inside
    the reductions and is vectorized."""
    loops = bound_loops(sch, block)
    if loops is None:
        return False
    kinds = iter_kinds(sch, block)
    n_spatial = len(kinds) - len(kinds.lstrip("S"))
    if n_spatial == 0 or work(sch, block) < OUTPUT_WORK * MIN_PARALLEL_ELEMENTS:
        return False
    spatial, reductions = loops[:n_spatial], loops[n_spatial:]
    factor = vector_factor(extent(sch, spatial[-1]), lanes_for(sch, block, bits))
    inner = None
    if reductions and factor > 1 and not strided_reads(sch, block, n_spatial - 1):
        outer, inner = sch.split(spatial[-1], factors=[None, factor])
        spatial = [*spatial[:-1], outer]
        sch.reorder(*spatial, *reductions, inner)
    fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    if extent(sch, fused) > 1:
        sch.parallel(fused)
    if inner is not None:
        sch.vectorize(inner)
        vectorize_innermost(sch, sch.decompose_reduction(block, reductions[0]))
    return True
