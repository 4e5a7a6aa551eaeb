"""Target names Ember accepts (triples, TVM tags, GPU families) and the TVM targets they map to."""

from __future__ import annotations

import difflib
import platform
import shutil
from dataclasses import dataclass

import tvm
from tvm.target.codegen import llvm_cpu_has_features

from ember.errors import EmberError

_ARCH_OF_TRIPLE = {
    "x86_64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv7a": "armv7",
    "armv7": "armv7",
    "armv8l": "armv7",
    "riscv64": "riscv64",
}
CROSS_COMPILERS = {
    "x86_64": "x86_64-linux-gnu-g++",
    "aarch64": "aarch64-linux-gnu-g++",
    "armv7": "arm-linux-gnueabihf-g++",
    "riscv64": "riscv64-linux-gnu-g++",
}
AARCH64_HOST = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}


@dataclass(frozen=True)
class TargetSpec:
    """A resolved target: the name the user gave, the TVM target, and where its code runs."""

    name: str
    target: tvm.target.Target
    arch: str  # architecture of the CPU that loads the library
    device: str  # cpu, cuda, opencl, vulkan

    @property
    def is_host_runnable(self) -> bool:
        return self.arch == host_arch() and self.device == "cpu"

    @property
    def cross_compiler(self) -> str | None:
        """The g++ that links for this target here, or None when it is not installed."""
        if self.arch == host_arch():
            return shutil.which("g++") and "g++"
        cc = CROSS_COMPILERS.get(self.arch)
        return cc if cc and shutil.which(cc) else None

    @property
    def layout(self) -> str:
        """The convolution layout -O2 picks for this target: NHWC on CPUs, where Ember's schedules
        vectorize over channels (1.5-3.7x faster than NCHW), and NCHW on GPUs (dlight's rules)."""
        return "NHWC" if self.device == "cpu" else "NCHW"

    def describe(self) -> str:
        return str(self.target.export()) if hasattr(self.target, "export") else str(self.target)


def host_arch() -> str:
    return _ARCH_OF_TRIPLE.get(platform.machine(), platform.machine())


def _host_target() -> dict:
    """This machine's CPU. On x86 with AVX-512, LLVM is told to prefer shuffles to gathers and scatters: on a
    Zen 4 it vectorized ShuffleNet's channel shuffles with vgatherdps/vscatterqps, 3-5x the time of the same
    kernels built for AVX2 (LLVM already avoids them on the Intel CPUs it knows are slow at them)."""
    triple = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(host_arch(), "")
    spec = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}
    if triple:
        spec["mtriple"] = triple
    if host_arch() == "x86_64" and llvm_cpu_has_features("avx512f", tvm.target.Target(spec)):
        spec["mattr"] = ["+prefer-no-gather", "+prefer-no-scatter"]
    return spec


# Named targets: name -> (TVM target spec, device, one-line description)
NAMED = {
    "host": (None, "cpu", "this machine's CPU, tuned for its exact model"),
    "x86_64-linux-gnu": ({"kind": "llvm", "mtriple": "x86_64-linux-gnu"}, "cpu", "64-bit x86 Linux, generic CPU"),
    "aarch64-linux-gnu": (AARCH64_HOST, "cpu", "64-bit ARM Linux with NEON (Cortex-A53 and up)"),
    "armv7a-linux-gnueabihf": (
        {"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mattr": ["+neon"]},
        "cpu",
        "32-bit ARMv7-A Linux, hard float, NEON",
    ),
    "cuda": ({"kind": "cuda", "host": None}, "cuda", "NVIDIA GPU (host CPU is this machine's)"),
    "mali": (
        {"kind": "opencl", "device": "mali", "host": AARCH64_HOST},
        "opencl",
        "ARM Mali GPU via OpenCL, aarch64 host",
    ),
    "adreno": (
        {"kind": "opencl", "device": "adreno", "host": AARCH64_HOST},
        "opencl",
        "Qualcomm Adreno GPU via OpenCL, aarch64 host",
    ),
    "vulkan": ({"kind": "vulkan", "host": AARCH64_HOST}, "vulkan", "Vulkan GPU (SPIR-V), aarch64 host"),
}
FEATURED_TAGS = (
    "raspberry-pi/4b-aarch64",
    "nvidia/jetson-orin-nano",
    "nvidia/jetson-agx-orin-64gb",
    "nvidia/jetson-agx-xavier",
    "arm/rasp4b64",
)


def _arch_of(target: tvm.target.Target) -> str:
    cpu = target.host if target.kind.name != "llvm" and target.host is not None else target
    if cpu.kind.name != "llvm":
        return host_arch()
    triple = str(cpu.attrs.get("mtriple", "")) or tvm.target.codegen.llvm_get_system_triple()
    return _ARCH_OF_TRIPLE.get(triple.split("-")[0], triple.split("-")[0])


def _device_of(target: tvm.target.Target) -> str:
    kind = target.kind.name
    return {"llvm": "cpu", "cuda": "cuda", "opencl": "opencl", "vulkan": "vulkan"}.get(kind, kind)


def resolve(name: str) -> TargetSpec:
    """Map a target name, triple or TVM tag to a TargetSpec; unknown names list close matches."""
    if name in NAMED:
        spec, device, _ = NAMED[name]
        if spec is None:
            spec = _host_target()
        if spec.get("host", 0) is None:
            spec = {**spec, "host": _host_target()}
        try:
            target = tvm.target.Target(spec)
        except Exception as e:  # TVM raises its own error types for unsupported kinds
            raise EmberError(f"target '{name}' is not available in this TVM build ({str(e)[:120]})") from None
        return TargetSpec(name, target, _arch_of(target), device)
    if name in tvm.target.list_tags():
        target = tvm.target.Target(name)
        return TargetSpec(name, target, _arch_of(target), _device_of(target))
    parts = name.split("-")
    if len(parts) >= 3 and parts[0] in _ARCH_OF_TRIPLE and "linux" in parts:
        target = tvm.target.Target({"kind": "llvm", "mtriple": name})
        return TargetSpec(name, target, _ARCH_OF_TRIPLE[parts[0]], "cpu")
    known = list(NAMED) + list(tvm.target.list_tags())
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "run 'ember targets' for the list"
    raise EmberError(f"unknown target '{name}'", hint=hint)


def summary(target: tvm.target.Target) -> str:
    """A short form of a TVM target: kind, then the attributes that identify the chip."""
    keys = ("device", "arch", "mtriple", "mcpu", "mattr")

    def fmt(v) -> str:
        return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) or type(v).__name__ == "Array" else str(v)

    parts = [target.kind.name] + [f"{k}={fmt(target.attrs[k])}" for k in keys if k in target.attrs and target.attrs[k]]
    if target.host is not None and target.kind.name != "llvm":
        parts.append(f"host=({summary(target.host)})")
    return " ".join(str(p) for p in parts)


def codegen_available(device: str) -> bool:
    func = {"cuda": "target.build.cuda", "opencl": "target.build.opencl", "vulkan": "target.build.vulkan"}.get(device)
    return func is None or tvm.get_global_func(func, True) is not None


def list_targets() -> list[tuple[str, str, str]]:
    """(name, what it is, the TVM target it maps to) for `ember targets`."""
    rows = []
    for name, (_, _, doc) in NAMED.items():
        spec = resolve(name)
        note = "" if codegen_available(spec.device) else " (unavailable: this TVM build has no codegen for it)"
        rows.append((name, doc + note, summary(spec.target)))
    for tag in FEATURED_TAGS:
        if tag in tvm.target.list_tags():
            rows.append((tag, "TVM tag", summary(tvm.target.Target(tag))))
    rows.append(("<any TVM tag>", f"{len(tvm.target.list_tags())} tags, see tvm.target.list_tags()", ""))
    return rows
