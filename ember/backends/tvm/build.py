"""Building a Relax module for a target with relax.build, and inspecting what was built."""

from __future__ import annotations

import re

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from ember.backends.tvm import schedules
from ember.backends.tvm.lower import lower_to_relax
from ember.backends.tvm.stack_arrays import PIPELINE as CPU_TIR_PIPELINE
from ember.backends.tvm.targets import TargetSpec, codegen_available
from ember.errors import EmberError
from ember.ir.graph import Graph

SOURCE_SUFFIX = {"cuda": ".cu", "opencl": ".cl"}
INTEGER_KERNELS = ("qconv2d", "qdense", "qadd")


def relax_pipeline(spec: TargetSpec, schedule: bool | None = None, tuned=None):
    """The Relax pipeline for a target: TVM's fusing default (GPU targets add dlight schedules); on CPUs
    Ember's schedule rules run after fusion unless `schedule` is False (default: EMBER_SCHEDULES, on),
    after the kernels a `tuned` database (ember.backends.tvm.tuned.TunedKernels) has records for."""
    schedule = schedules.enabled() if schedule is None else schedule
    if spec.device != "cpu" or not schedule:
        return relax.get_default_pipeline(spec.target)
    target = spec.target
    passes = (
        cpu_generic.library_dispatch_passes(target)
        + cpu_generic.legalize_passes(target)
        + schedules.schedule_passes(target, tuned)
        + cpu_generic.dataflow_lower_passes(target)
        + cpu_generic.finalize_passes(target)
    )

    @tvm.transform.module_pass(opt_level=0, name="EmberCPUPipeline")
    def pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return pipeline


def build(
    graph: Graph,
    spec: TargetSpec,
    mod: tvm.IRModule | None = None,
    schedule: bool | None = None,
    tuned=None,
    exec_mode: str | None = None,
):
    """Lower (unless `mod` is given) and compile; returns TVM's VM executable. `schedule` and `tuned` as in
    `relax_pipeline`; `exec_mode` as in `default_exec_mode`."""
    if not codegen_available(spec.device):
        raise EmberError(
            f"target '{spec.name}' needs TVM's {spec.device} code generator, which this TVM build lacks",
            hint=f"install an apache-tvm built with USE_{spec.device.upper()}=ON",
        )
    mod = lower_to_relax(graph, spec.device, target=spec.target) if mod is None else mod
    try:
        tir_pipeline = CPU_TIR_PIPELINE if spec.device == "cpu" else "default"
        return relax.build(
            mod,
            spec.target,
            relax_pipeline=relax_pipeline(spec, schedule, tuned),
            tir_pipeline=tir_pipeline,
            exec_mode=exec_mode or default_exec_mode(spec),
        )
    except (RuntimeError, ValueError, TypeError, AssertionError) as e:  # tvm_ffi's, and dlight's asserts
        last = (str(e).strip().splitlines() or [f"{type(e).__name__} in TVM's schedule rules"])[-1][:300]
        raise EmberError(f"TVM failed to compile for '{spec.name}': {last}", hint=_hint(graph, spec)) from None


def default_exec_mode(spec: TargetSpec) -> str:
    """How the VM runs `main`: on CPUs "compiled", its calls compiled to machine code with the kernels (a trained
    CNN's 4-kernel int8 run took 2.25 us instead of 2.75 us under the bytecode interpreter); elsewhere
    "bytecode". A bytecode build is the one TVM's per-call instruments see (ember.bench.kernel_times)."""
    return "compiled" if spec.device == "cpu" else "bytecode"


def _hint(graph: Graph, spec: TargetSpec) -> str | None:
    """Why a GPU build of an int8 graph may fail: its kernels have CPU schedules only."""
    if spec.device == "cpu" or not any(n.op in INTEGER_KERNELS for n in graph.nodes):
        return None
    return (
        "Ember schedules int8 kernels for CPUs only and TVM's GPU rules fail on some of them for some GPUs: "
        "compile for the GPU without --quantize, or quantize for its CPU (e.g. -t aarch64-linux-gnu)"
    )


def device_sources(executable) -> dict[str, str]:
    """Kernel sources of the device modules in an executable (e.g. {'cuda': '...'})."""
    found: dict[str, str] = {}

    def walk(mod) -> None:
        for sub in mod.imports:
            if sub.kind in SOURCE_SUFFIX:
                found[sub.kind] = found.get(sub.kind, "") + sub.inspect_source()
            walk(sub)

    walk(executable.mod)
    return found


def count_kernels(executable) -> int:
    """Number of distinct compiled kernels the VM calls (host kernels or GPU kernels)."""
    return len(kernel_names(executable))


def kernel_names(executable) -> set[str]:
    """Names of the compiled kernels the VM calls: GPU kernels, else host kernels (of an executable built in this
    process when its main is compiled)."""
    names: set[str] = set()
    for src in device_sources(executable).values():
        names |= set(re.findall(r"(?:__global__|__kernel)\s+void\s+(?:__launch_bounds__\(\d+\)\s+)?(\w+)\(", src))
    if names:
        return names
    m = re.search(r"Globals \(#\d+\): \[([^\]]*)\]", executable.stats())
    names = {s.strip() for s in m.group(1).split(",")} if m else set()
    if names == {"main"}:  # a compiled main (exec_mode "compiled") calls its kernels from machine code
        names = _compiled_main_calls(executable)
    return {s for s in names if s and s != "main" and not s.startswith("vm.builtin")}


def _compiled_main_calls(executable) -> set[str]:
    """Kernels a compiled VM function calls, read from the LLVM IR of an executable built in this process."""
    source = executable.mod.imports[0].inspect_source("ll")
    called: set[str] = set()
    for body in re.findall(r"^define [^@\n]*@__vmtir__\w*\(.*?^}", source, re.M | re.S):
        called |= set(re.findall(r"call [^@\n]*@__tvm_ffi_(\w+)\(", body))
    return called
