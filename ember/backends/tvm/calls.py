"""Recognizing kernel calls in Relax functions, for the passes that read or rewrite a lowered module, and the op
patterns (TVM's OpPatternKind) a kernel's "op_pattern" attribute gives Relax FuseOps."""

from __future__ import annotations

import tvm
from tvm import relax

CALL_TIR = tvm.ir.Op.get("relax.call_tir")
INJECTIVE, OUT_ELEMWISE_FUSABLE, OPAQUE = 2, 4, 8  # fuses with neighbours / takes elementwise consumers / alone


def is_call_tir(expr) -> bool:
    """Whether `expr` calls a kernel through relax.call_tir (not call_tir_inplace, not a packed function)."""
    return isinstance(expr, relax.Call) and expr.op.same_as(CALL_TIR)
