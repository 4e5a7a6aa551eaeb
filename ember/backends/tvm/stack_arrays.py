"""Small arrays on the stack: TVM's LowerTVMBuiltin turns every CPU buffer of 1 KiB or more into a
TVMBackendAllocWorkspace call, which a kernel allocating its accumulator tile under a parallel loop makes once
per iteration, and whose heap memory LLVM does not keep in registers. With AVX-512 a register tile reaches
1 KiB (16 accumulators of 64 bytes) and an elementwise kernel's vectorized intermediates 2.3 KiB, so Ember's
CPU builds run TVM's TIR pipeline with one pass added that keeps constant-size buffers up to MAX_STACK_ARRAY as
stack arrays. In registers, LLVM contracts a multiply and a later add into one FMA (rounded once)."""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.ir import IRModule
from tvm.tirx import compilation_pipeline

from ember.backends.tvm.calls import map_kernel_bodies

PIPELINE = "ember_cpu"
KEEP_ON_STACK = "disable_lower_builtin"  # LowerTVMBuiltin leaves an allocation annotated so as a stack array
MAX_STACK_ARRAY = 4096  # bytes: an AVX-512 tile with room to spare, far under a worker thread's stack


def _on_stack(node: tirx.AllocBuffer) -> tirx.AllocBuffer:
    buffer = node.buffer
    if buffer.scope() != "global" or not all(isinstance(d, tirx.IntImm) for d in buffer.shape):
        return node
    size = tvm.DataType(buffer.dtype).itemsize
    for d in buffer.shape:
        size *= int(d)
    if size > MAX_STACK_ARRAY or KEEP_ON_STACK in node.annotations:
        return node
    annotations = {**node.annotations, KEEP_ON_STACK: tirx.IntImm("int32", 1)}
    return tirx.AllocBuffer(buffer, annotations=annotations, span=node.span)


@tvm.transform.module_pass(opt_level=0, name="StackArrays")
def stack_arrays(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """Every constant-size global buffer of at most MAX_STACK_ARRAY bytes in the module's kernels a stack array."""
    return map_kernel_bodies(mod, [(tirx.AllocBuffer, _on_stack)])


def _ember_cpu_pipeline():
    lower, finalize_host, finalize_device = compilation_pipeline.get_tir_pipeline("s_tir")
    return tvm.transform.Sequential([lower, stack_arrays]), finalize_host, finalize_device


compilation_pipeline.register_tir_pipeline(PIPELINE, _ember_cpu_pipeline)
