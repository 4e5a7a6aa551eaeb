"""Conv2d (plain, grouped, depthwise) in NCHW or NHWC with its fused epilogue (bias, activation, residual)."""

from __future__ import annotations

from dataclasses import replace

from tvm import s_tir, tirx

from ember.backends.tvm.schedules.common import KNOBS, CPURule, strided_reads
from ember.backends.tvm.schedules.contraction import Blocking, schedule_contraction

# TOPI block name -> the spatial iterator that gets the SIMD lanes and those that may be blocked in registers.
# NCHW: lanes along output width; rows along output channels (an input vector feeds every channel's FMA), or
# along output rows for grouped/depthwise, where channels share no input. NHWC: lanes along output channels,
# rows along output width (one weight vector feeds every pixel's FMA); grouped/depthwise weights are a few
# KiB, so its channel tiles run inside the pixel loops and read each input pixel's channels in one pass.
BLOCKING = {
    "conv2d_nchw": Blocking(vector_axis=3, row_axes=(1, 2)),
    "group_conv2d_nchw": Blocking(vector_axis=3, row_axes=(2,)),
    "conv2d_nhwc": Blocking(vector_axis=3, row_axes=(2, 1), weights_by_lanes=True),
    "group_conv2d_nhwc": Blocking(vector_axis=3, row_axes=(2, 1), weights_by_lanes=True, pixels_outer=True),
}
# A 1x1 NHWC conv is a matmul over pixels: H x W merge into one row axis (no masked rows at 14 or 7 pixel
# widths) and each parallel lane tile sweeps all pixels per K chunk, its weights chunk in L1. Measured per
# kernel on ResNet-50's 1x1 convs (Zen 3, one thread, CPU time): 1.2-2.2x the GFLOP/s of register tiles over
# the whole reduction, inputs beyond L2 (56x56x256, 14x14x1024, stride 2) included.
POINTWISE_NHWC = Blocking(vector_axis=2, row_axes=(1,), weights_by_lanes=True, cache_block=True, merge_rows=1)
# A spatial (3x3) NHWC conv's pixels merge into one row axis too, so its register rows need not divide the
# width: a 7-wide output took tiles of 4 and 3 (masked) rows, merged its 49 pixels take 6 rows (12
# accumulators), the last block masked. Per kernel on ResNet-50's 3x3 convs (Zen 3, one thread, CPU time, in
# turns): 7x7 0.90x, stride 2 14->7 0.92x, stride 2 56->28 0.93x, 56x56 and stride 2 28->14 0.97x, 14x14 and
# 28x28 0.99x (1.04x in one run); wider outputs (the 112-wide stem) are left as they were, unmeasured.
MERGED_WIDTH = 56
SPATIAL_NHWC = replace(POINTWISE_NHWC, cache_block=False)
# With few input channels a lane tile's whole weight column (K x 16-24 lanes, at most 15 KB) stays in L1, so
# nothing is worth cache blocking: tiles of pixels x lanes over the whole reduction, lane tiles inside the
# pixel loops (each input pixel read once, outputs written in order), rows dividing the pixels (no masked
# tail). Per kernel (one thread, alternating): MobileNetV2's K=16-32 expand/project convs at 112x112 and
# 56x56 0.66-0.93x the time, K=96-160 0.85-1.04x; ResNet-50's K=64 and 128 0.70-0.86x; K=256-512 were
# 0.87-1.09x, so they keep POINTWISE_NHWC. The bound is Knobs.small_k (160; `ember tune` tries others).
SMALL_POINTWISE_NHWC = replace(POINTWISE_NHWC, cache_block=False, pixels_outer=True, exact_rows=True)
# ... unless the weights outgrow half an L2: MobileNetV2's 7x7 160 -> 960 conv (600 KiB of weights, read again
# by each of its 9 pixel tiles) took 0.324 ms cache-blocked against 0.375 (3 calls, 2 threads, Zen 3, 40 rounds
# in turns); its 14x14 96 -> 576 (216 KiB) was even, and SqueezeNet's 13x13 64 -> 256 (64 KiB) 0.113 against
# 0.098 when its output channels outnumbering its pixels was the rule.
SMALL_POINTWISE_BYTES = 256 << 10
# A depthwise NHWC conv shares no input between channels, so one vector of channels per tile leaves room for
# more pixels (8 where two vectors fit 4-6), and rows that divide the width run no masked tail tile. Measured
# per kernel on MobileNetV2's (Zen 3, one thread, alternating): 0.53-0.93x the time, 7x7 to 112x112.
DEPTHWISE_NHWC = replace(BLOCKING["group_conv2d_nhwc"], one_vector=True, exact_rows=True)


class Conv2D(CPURule):
    """Parallel output tiles, a register block of rows x lanes accumulated over (c, kh, kw), epilogue fused."""

    def schedule(self, sch: s_tir.Schedule, bits: int) -> s_tir.Schedule | None:
        convs = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint in BLOCKING]
        if len(convs) != 1:
            return None
        blocking = BLOCKING[sch.get(convs[0]).name_hint]
        ivs = sch.get(convs[0]).iter_vars
        if len(ivs) != 7 or strided_reads(sch, convs[0], blocking.vector_axis):
            return None
        if sch.get(convs[0]).name_hint == "conv2d_nhwc" and int(ivs[4].dom.extent) * int(ivs[5].dom.extent) == 1:
            blocking = _pointwise_blocking(int(ivs[3].dom.extent), int(ivs[6].dom.extent))
        elif sch.get(convs[0]).name_hint == "conv2d_nhwc" and int(ivs[2].dom.extent) <= MERGED_WIDTH:
            blocking = SPATIAL_NHWC
        if sch.get(convs[0]).name_hint == "group_conv2d_nhwc" and int(ivs[6].dom.extent) == 1:
            blocking = DEPTHWISE_NHWC
        elif sch.get(convs[0]).name_hint == "group_conv2d_nhwc":
            blocking = replace(blocking, lane_period=_outputs_per_group(sch, convs[0]))
        return schedule_contraction(sch, convs[0], blocking, bits)


def _pointwise_blocking(outputs: int, inputs: int) -> Blocking:
    """A 1x1 conv's lane tiles go inside its pixel loops where it has few inputs and its float32 weights fit in
    SMALL_POINTWISE_BYTES: every pixel tile reads all of them."""
    small = inputs <= KNOBS.get().small_k and 4 * inputs * outputs <= SMALL_POINTWISE_BYTES
    return SMALL_POINTWISE_NHWC if small else POINTWISE_NHWC


def _outputs_per_group(sch: s_tir.Schedule, block) -> int:
    """A grouped NHWC conv's output channels per group: a lane tile across two groups reads two groups' inputs,
    a gather per lane (ShuffleNet's 1x1 convs over 4 groups of 68 channels ran at 2 GMAC/s in tiles of 16).
    The input is the read whose channel index depends on both the output channel and the reduction channel."""
    ivs = sch.get(block).iter_vars
    out_var, red_var, outputs, per_group_in = ivs[3].var, ivs[6].var, int(ivs[3].dom.extent), int(ivs[6].dom.extent)
    for region in sch.get(block).reads:
        used = tirx.analysis.undefined_vars(region.region[-1].min)
        if any(v.same_as(out_var) for v in used) and any(v.same_as(red_var) for v in used):
            return outputs // (int(region.source.shape[-1]) // per_group_in)
    raise ValueError("no grouped input read")
