"""Conv2d (plain, grouped, depthwise) in NCHW or NHWC with its fused epilogue (bias, activation, residual)."""

from __future__ import annotations

from tvm import s_tir

from ember.backends.tvm.schedules.common import CPURule, strided_reads
from ember.backends.tvm.schedules.contraction import Blocking, schedule_contraction

# TOPI block name -> the spatial iterator that gets the SIMD lanes and those that may be blocked in registers.
# NCHW: lanes along output width; rows along output channels (an input vector feeds every channel's FMA), or
# along output rows for grouped/depthwise, where channels share no input. NHWC: lanes along output channels,
# rows along output width (one weight vector feeds every pixel's FMA).
BLOCKING = {
    "conv2d_nchw": Blocking(vector_axis=3, row_axes=(1, 2)),
    "group_conv2d_nchw": Blocking(vector_axis=3, row_axes=(2,)),
    "conv2d_nhwc": Blocking(vector_axis=3, row_axes=(2, 1), weights_by_lanes=True),
    "group_conv2d_nhwc": Blocking(vector_axis=3, row_axes=(2, 1), weights_by_lanes=True),
}


class Conv2D(CPURule):
    """Parallel output tiles, a register block of rows x lanes accumulated over (c, kh, kw), epilogue fused."""

    def schedule(self, sch: s_tir.Schedule, bits: int) -> s_tir.Schedule | None:
        convs = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint in BLOCKING]
        if len(convs) != 1:
            return None
        blocking = BLOCKING[sch.get(convs[0]).name_hint]
        if len(sch.get(convs[0]).iter_vars) != 7 or strided_reads(sch, convs[0], blocking.vector_axis):
            return None
        return schedule_contraction(sch, convs[0], blocking, bits)
