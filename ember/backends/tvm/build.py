"""Building a Relax module for a target with tvm.compile, and inspecting what was built."""

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


def build(graph: Graph, spec: TargetSpec, mod: tvm.IRModule | None = None, schedule: bool | None = None, tuned=None):
    """Lower (unless `mod` is given) and compile; returns TVM's VM executable. `schedule` and `tuned` as in
    `relax_pipeline`."""
    if not codegen_available(spec.device):
        raise EmberError(
            f"target '{spec.name}' needs TVM's {spec.device} code generator, which this TVM build lacks",
            hint=f"install an apache-tvm built with USE_{spec.device.upper()}=ON",
        )
    mod = lower_to_relax(graph, spec.device) if mod is None else mod
    try:
        tir_pipeline = CPU_TIR_PIPELINE if spec.device == "cpu" else "default"
        return tvm.compile(
            mod, spec.target, relax_pipeline=relax_pipeline(spec, schedule, tuned), tir_pipeline=tir_pipeline
        )
    except (RuntimeError, ValueError, TypeError, AssertionError) as e:  # tvm_ffi's, and dlight's asserts
        last = (str(e).strip().splitlines() or [f"{type(e).__name__} in TVM's schedule rules"])[-1][:300]
        raise EmberError(f"TVM failed to compile for '{spec.name}': {last}", hint=_hint(graph, spec)) from None


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
    sources = device_sources(executable)
    if sources:
        names = set()
        for src in sources.values():
            names |= set(re.findall(r"(?:__global__|__kernel)\s+void\s+(?:__launch_bounds__\(\d+\)\s+)?(\w+)\(", src))
        return len(names)
    stats = executable.stats()
    m = re.search(r"Globals \(#\d+\): \[([^\]]*)\]", stats)
    names = [s.strip() for s in m.group(1).split(",")] if m else []
    return sum(1 for s in names if s and s != "main" and not s.startswith("vm.builtin"))
