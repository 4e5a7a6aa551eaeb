"""Recognizing kernel calls in Relax functions and mapping kernels' bodies, for the passes that read or rewrite a
lowered module, and the op patterns (TVM's OpPatternKind) a kernel's "op_pattern" attribute gives Relax FuseOps."""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax, tirx

CALL_TIR = tvm.ir.Op.get("relax.call_tir")
INJECTIVE, OUT_ELEMWISE_FUSABLE, OPAQUE = 2, 4, 8  # fuses with neighbours / takes elementwise consumers / alone


def is_call_tir(expr) -> bool:
    """Whether `expr` calls a kernel through relax.call_tir (not call_tir_inplace, not a packed function)."""
    return isinstance(expr, relax.Call) and expr.op.same_as(CALL_TIR)


def map_kernel_bodies(mod: tvm.IRModule, callbacks: list) -> tvm.IRModule:
    """`mod` with each TIR kernel's body mapped through tvm_ffi.structural_map(body, callbacks); a kernel the
    callbacks leave alone keeps its body object."""
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc):
            body = tvm_ffi.structural_map(func.body, callbacks)
            if not body.same_as(func.body):
                mod.update_func(gv, func.with_body(body))
    return mod
