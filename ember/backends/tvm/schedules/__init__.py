"""Ember's CPU schedule rules: TVM's CPU pipeline leaves kernels as scalar single-threaded loops, so these
rules (dlight ScheduleRules, tried in order per kernel) parallelize, vectorize and register-block them."""

from __future__ import annotations

import os

import tvm
from tvm import relax, s_tir, tirx
from tvm.ir import IRModule
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.s_tir import dlight
from tvm.target import Target

from ember.backends.tvm.calls import is_call_tir
from ember.backends.tvm.concat_rules import concat_in_place
from ember.backends.tvm.fast_math import vector_math
from ember.backends.tvm.schedules.attention import Attention
from ember.backends.tvm.schedules.common import vector_bits
from ember.backends.tvm.schedules.conv2d import Conv2D
from ember.backends.tvm.schedules.dense import Dense
from ember.backends.tvm.schedules.elementwise import Fallback
from ember.backends.tvm.schedules.expand_depthwise import ExpandDepthwise
from ember.backends.tvm.schedules.int8 import Int8Grouped, Int8Packed
from ember.backends.tvm.schedules.rows import RowWise
from ember.backends.tvm.schedules.stem import StemPool
from ember.backends.tvm.schedules.winograd import Winograd


def enabled() -> bool:
    """Whether builds schedule CPU kernels (EMBER_SCHEDULES=0 turns it off, for A/B comparisons)."""
    return os.environ.get("EMBER_SCHEDULES", "1") != "0"


def cpu_rules(target: Target) -> list[dlight.ScheduleRule]:
    """The rules for a CPU target, most specific first; the target's vector width sizes each schedule."""
    if target.kind.name != "llvm":
        return []
    rules = [
        Attention(),
        Winograd(),
        ExpandDepthwise(),
        StemPool(),
        Int8Packed(),
        Int8Grouped(),
        Conv2D(),
        Dense(),
        RowWise(),
    ]
    return [*rules, Fallback()]


CONSTANT = type(relax.const(0.0))


@tvm.transform.module_pass(opt_level=0, name="MarkConstantArguments")
def mark_constant_arguments(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """Mark each kernel's arguments that are constants at every call as `layout_free_buffers` (rules may
    repack those); TVM's AttachAttrLayoutFreeBuffers does the same but renames every kernel."""
    constant: dict[tvm.ir.GlobalVar, set[int]] = {}

    def visit(expr: relax.Expr) -> None:
        if is_call_tir(expr):
            here = {i for i, arg in enumerate(expr.args[1].fields) if isinstance(arg, CONSTANT)}
            constant[expr.args[0]] = constant.get(expr.args[0], here) & here

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    for gv, indices in constant.items():
        mod.update_func(gv, mod[gv].with_attr("layout_free_buffers", sorted(indices)))
    return mod


@tvm.transform.module_pass(opt_level=0, name="MarkHandWrittenKernels")
def mark_hand_written(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """The kernels TOPI writes as loops already (cumsum's scan, topk's sort) have no root block: give them one,
    which the layout-rewrite split needs, and mark them scheduled, so the rules leave them be."""
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc) and getattr(getattr(func.body, "block", None), "name_hint", "") != "root":
            root = s_tir.SBlockRealize([], True, s_tir.SBlock([], [], [], "root", func.body))
            mod.update_func(gv, func.with_body(root).with_attr("tirx.is_scheduled", True))
    return mod


def prepare_passes() -> list[tvm.transform.Pass]:
    """What runs between fusion and the rules: constant weights are marked layout-free so rules may repack them,
    and transcendental functions take their vector forms. `ember tune`'s kernels are these functions."""
    return [mark_constant_arguments, mark_hand_written, vector_math]


def schedule_passes(target: Target, tuned=None) -> list[tvm.transform.Pass]:
    """Scheduling after fusion (prepare_passes, then the rules; kernels a `tuned` database (TunedKernels) has
    records for take them first), and the repacking the rules add is split into functions of the constants alone
    and folded at compile time."""
    return [
        *prepare_passes(),
        *([tuned.pass_()] if tuned is not None else []),
        dlight.ApplyDefaultSchedule(*cpu_rules(target)),
        relax.transform.SplitLayoutRewritePreproc(),
        relax.transform.FoldConstant(),
        concat_in_place,
        relax.transform.DeadCodeElimination(),
    ]


def schedule_module(mod: IRModule, target: Target) -> IRModule:
    """A lowered Relax module legalized, fused and scheduled as a CPU build would (to inspect kernels)."""
    with target:
        passes = cpu_generic.legalize_passes(target) + schedule_passes(target)
        return tvm.transform.Sequential(passes)(mod)


__all__ = ["cpu_rules", "enabled", "prepare_passes", "schedule_module", "schedule_passes", "vector_bits"]
