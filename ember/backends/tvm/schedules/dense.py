"""Matmul and dense layers (x @ W + b, activation), batched or not, with the weight laid out [K, N]."""

from __future__ import annotations

from tvm import s_tir

from ember.backends.tvm.schedules.common import CPURule, iter_kinds, strided_reads
from ember.backends.tvm.schedules.contraction import Blocking, schedule_contraction

NAMES = ("matmul", "T_matmul", "T_batch_matmul_NN", "T_matmul_NN")


class Dense(CPURule):
    """Lanes along N, rows along M, accumulated over K in registers; bias and activation fused.

    A weight read along N with stride K (the NT form) would make every vector a gather, so it is left to
    the fallback rule."""

    def schedule(self, sch: s_tir.Schedule, bits: int) -> s_tir.Schedule | None:
        root = sch.get_sblock("root")
        found = [b for b in sch.get_child_blocks(root) if sch.get(b).name_hint in NAMES]
        if len(found) != 1:
            return None
        kinds = iter_kinds(sch, found[0])
        n_spatial = len(kinds) - len(kinds.lstrip("S"))
        if n_spatial < 2 or strided_reads(sch, found[0], n_spatial - 1):
            return None
        blocking = Blocking(n_spatial - 1, (n_spatial - 2,), weights_by_lanes=True)
        return schedule_contraction(sch, found[0], blocking, bits)
