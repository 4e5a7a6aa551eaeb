"""What this machine has for compiling, running and deploying bundles, and how to get each missing piece."""

from __future__ import annotations

import ctypes.util
import glob
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version

from ember.backends.runtime import (
    CROSS_GXX,
    GPU_LIBS,
    LIBS,
    QEMU,
    WHEEL_PLATFORM,
    cache_dir,
    cached,
    host_arch,
    host_runtime,
    runtime_libs,
)
from ember.errors import EmberError


@dataclass(frozen=True)
class Check:
    """One component: whether it is usable, what was found, and the command that gets it when it is not."""

    component: str
    ok: bool
    detail: str
    fix: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def _tool_version(exe: str, flag: str = "--version") -> str:
    try:
        out = subprocess.run([exe, flag], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "found, but it does not run"
    lines = [ln for ln in out.splitlines() if ln.strip()]
    line = next((ln for ln in lines if "release" in ln), lines[0] if lines else "found")
    return f"{shutil.which(exe)}: {line.strip()[:80]}"


def _tool(component: str, exe: str, fix: str, flag: str = "--version") -> Check:
    if shutil.which(exe) is None:
        return Check(component, False, f"no {exe} on PATH", fix)
    return Check(component, True, _tool_version(exe, flag))


def _compilers() -> list[Check]:
    checks = [_tool("host C++ compiler", "g++", "apt-get install g++")]
    checks.append(_tool("make (builds a bundle's runner)", "make", "apt-get install make"))
    for arch, gxx in CROSS_GXX.items():
        if arch != host_arch():
            checks.append(_tool(f"{arch} cross compiler", gxx, f"apt-get install g++-{gxx.removesuffix('-g++')}"))
    return checks


def _emulators() -> list[Check]:
    return [_tool(f"{arch} emulator", qemu, "apt-get install qemu-user") for arch, qemu in QEMU.items()]


def _runtimes() -> list[Check]:
    found = {r["arch"]: r for r in cached()}
    checks = []
    for arch in sorted({host_arch(), *CROSS_GXX}):
        r = found.get(arch)
        if arch == host_arch():
            detail = "from the installed tvm and tvm_ffi packages (for --standalone host bundles)"
            checks.append(Check(f"{arch} TVM runtime", True, detail))
        elif r and r["usable"]:
            versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items()) or "built by hand"
            checks.append(Check(f"{arch} TVM runtime", True, f"{r['path']} ({versions})"))
        elif arch in WHEEL_PLATFORM:
            why = "cached for another TVM version" if r else "not fetched"
            checks.append(Check(f"{arch} TVM runtime", False, why, f"ember runtime fetch --arch {arch}"))
        else:
            how = f"'ember runtime fetch --arch {arch}' says how"
            fix = f"build TVM's runtime with {CROSS_GXX[arch]} into {cache_dir(arch)} ({how})"
            checks.append(Check(f"{arch} TVM runtime", False, "no prebuilt runtime exists", fix))
    return checks


def _tvm() -> list[Check]:
    try:
        import tvm

        from ember.backends.tvm.targets import codegen_available
    except ImportError as e:
        return [Check("TVM", False, f"cannot import tvm ({e})", "pip install 'apache-tvm==0.27.*'")]
    checks = [Check("TVM", True, f"{tvm.__version__} ({tvm.__file__.rsplit('/', 2)[0]})")]
    build_flag = {"cuda": "USE_CUDA", "opencl": "USE_OPENCL", "vulkan": "USE_VULKAN"}
    for device, flag in build_flag.items():
        ok = codegen_available(device)
        detail = "code generator built in" if ok else "this TVM build has no code generator for it"
        checks.append(Check(f"TVM {device} codegen", ok, detail, "" if ok else f"build TVM from source with {flag}=ON"))
    return checks


def _gpu() -> list[Check]:
    cuda_lib = ctypes.util.find_library("cuda")
    icd = ctypes.util.find_library("OpenCL")
    vendors = glob.glob("/etc/OpenCL/vendors/*.icd")
    return [
        _tool("nvcc (CUDA toolkit)", "nvcc", "install the CUDA toolkit (apt-get install nvidia-cuda-toolkit)"),
        Check(
            "CUDA driver",
            cuda_lib is not None,
            f"{cuda_lib}" if cuda_lib else "no libcuda.so (running CUDA bundles needs an NVIDIA GPU and driver)",
            "" if cuda_lib else "install the NVIDIA driver (apt-get install nvidia-driver-<version>)",
        ),
        Check(
            "OpenCL ICD loader",
            icd is not None,
            f"{icd}; vendor ICDs: {', '.join(vendors) or 'none'}" if icd else "no libOpenCL.so",
            "" if icd else "apt-get install ocl-icd-libopencl1 clinfo, plus the GPU vendor's ICD",
        ),
        _tool("clinfo", "clinfo", "apt-get install clinfo", flag="--list"),
        *_gpu_modules(),
    ]


def _gpu_modules() -> list[Check]:
    """TVM's GPU runtime modules that --standalone GPU bundles carry: the host's (with the vendor runtime it
    links) and each cached cross runtime's."""
    usable = {r["arch"] for r in cached() if r["usable"]}
    checks = []
    for device, names in GPU_LIBS.items():
        for arch in sorted({host_arch(), *WHEEL_PLATFORM}):
            component = f"{arch} TVM {device} runtime module ({device} bundles)"
            if arch == host_arch():
                try:
                    libs = runtime_libs(host_runtime(), device)
                    checks.append(Check(component, True, ", ".join(str(p) for p in libs[len(LIBS) :])))
                except EmberError as e:
                    checks.append(Check(component, False, e.message, e.hint or "pip install apache-tvm"))
            elif arch not in usable:
                checks.append(Check(component, False, "no runtime fetched", f"ember runtime fetch --arch {arch}"))
            elif not all((cache_dir(arch) / "lib" / n).exists() for n in names):
                fix = f"ember runtime fetch --arch {arch} --refresh"
                checks.append(Check(component, False, f"the cached runtime has no {names[0]}", fix))
            else:
                checks.append(Check(component, True, str(cache_dir(arch) / "lib" / names[0])))
    return checks


def _packages() -> list[Check]:
    wanted = {
        "onnxruntime": ("compile --verify, ember bench", "pip install onnxruntime"),
        "torch": ("the PyTorch frontend", "pip install 'ember[torch]'"),
    }
    checks = []
    for name, (use, fix) in wanted.items():
        try:
            checks.append(Check(name, True, f"{version(name)} (for {use})"))
        except PackageNotFoundError:
            checks.append(Check(name, False, f"not installed (needed for {use})", fix))
    return checks


SECTIONS: dict[str, Callable[[], list[Check]]] = {
    "compilers": _compilers,
    "emulators": _emulators,
    "runtimes": _runtimes,
    "tvm": _tvm,
    "gpu": _gpu,
    "packages": _packages,
}


def diagnose() -> dict[str, list[Check]]:
    """Every check, by section."""
    return {name: run() for name, run in SECTIONS.items()}
