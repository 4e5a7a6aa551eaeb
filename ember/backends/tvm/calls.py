"""Recognizing kernel calls in Relax functions, for the passes that read or rewrite a lowered module."""

from __future__ import annotations

import tvm
from tvm import relax

CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def is_call_tir(expr) -> bool:
    """Whether `expr` calls a kernel through relax.call_tir (not call_tir_inplace, not a packed function)."""
    return isinstance(expr, relax.Call) and expr.op.same_as(CALL_TIR)
