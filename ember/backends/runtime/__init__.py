"""TVM runtimes for other architectures, the C++ bundle runner, and emulated runs under qemu-user.

The registry's aarch64 wheels of apache-tvm / apache-tvm-ffi carry `libtvm_runtime.so` and `libtvm_ffi.so`;
`fetch` extracts them (with the FFI headers) into a cache, `build_runner` cross-compiles `runner.cc`
against them with the bundle Makefile, and `run_bundle` runs a bundle's `model.so` through that runner
under qemu, or on this machine's GPU for CUDA bundles. For the host's own architecture the runtime comes
from the installed tvm / tvm_ffi packages.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ember.backends.artifact import elf_arch, sha256_file
from ember.errors import EmberError

RUNNER_SOURCE = Path(__file__).with_name("runner.cc")
MAKEFILE = Path(__file__).with_name("Makefile")
WHEEL_PLATFORM = {"aarch64": "manylinux_2_28_aarch64"}
QEMU = {"aarch64": "qemu-aarch64", "armv7": "qemu-arm"}
SYSROOT = {"aarch64": "/usr/aarch64-linux-gnu", "armv7": "/usr/arm-linux-gnueabihf"}
CROSS_GXX = {"aarch64": "aarch64-linux-gnu-g++", "armv7": "arm-linux-gnueabihf-g++"}
LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")
GPU_LIBS = {"cuda": ("libtvm_runtime_cuda.so",)}  # the runner loads these for --device cuda
_ALL_GPU_LIBS = {name for names in GPU_LIBS.values() for name in names}
_CACHE_LOCK = threading.RLock()
_held = 0


def _cache_locked(fn):
    """Run `fn` holding an exclusive lock on the runtime cache, so processes filling it at once (parallel test
    workers, two shells) never remove a runtime another one is linking against. Re-entrant in one process."""

    @functools.wraps(fn)
    def locked(*args, **kwargs):
        global _held
        with _CACHE_LOCK:
            if _held:
                return fn(*args, **kwargs)
            root = cache_root()
            root.mkdir(parents=True, exist_ok=True)
            with open(root / ".lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                _held += 1
                try:
                    return fn(*args, **kwargs)
                finally:
                    _held -= 1

    return locked


def cache_root() -> Path:
    """Where runtimes are cached: $EMBER_CACHE/runtime, by default ~/.cache/ember/runtime."""
    return Path(os.environ.get("EMBER_CACHE", Path.home() / ".cache" / "ember")) / "runtime"


def cache_dir(arch: str) -> Path:
    return cache_root() / arch


def runtime_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {"apache-tvm": version("apache-tvm"), "apache-tvm-ffi": version("apache-tvm-ffi")}


def _build_hint(arch: str) -> str:
    gxx = CROSS_GXX.get(arch, f"{arch}-linux-gnu-g++")
    tvm_version = runtime_versions()["apache-tvm"].split(".post")[0]
    return (
        f"build it from a TVM {tvm_version} source checkout with {gxx}: cmake -B build "
        f"-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR={arch} -DCMAKE_C_COMPILER={gxx[:-3]}gcc "
        f"-DCMAKE_CXX_COMPILER={gxx} -DUSE_LLVM=OFF && cmake --build build --target tvm_runtime, then put "
        f"libtvm_runtime.so and libtvm_ffi.so in {cache_dir(arch) / 'lib'} and 3rdparty/tvm-ffi/include/* in "
        f"{cache_dir(arch) / 'include'}"
    )


def _complete(root: Path) -> bool:
    return all((root / "lib" / lib).exists() for lib in LIBS) and (root / "include" / "tvm" / "ffi").is_dir()


@_cache_locked
def host_runtime() -> Path:
    """The host's runtime, laid out like a cached one (lib/, include/): links into the installed tvm and tvm_ffi
    packages, made once in the cache."""
    import tvm
    import tvm_ffi

    found = {
        "libtvm_runtime.so": Path(tvm.__file__).parent / "lib" / "libtvm_runtime.so",
        "libtvm_ffi.so": Path(tvm_ffi.__file__).parent / "lib" / "libtvm_ffi.so",
        "include": Path(tvm_ffi.__file__).parent / "include",
    }
    missing = [str(p) for p in found.values() if not p.exists()]
    if missing:
        raise EmberError(f"the installed TVM lacks {missing[0]}", hint="pip install --force-reinstall apache-tvm")
    out = cache_dir(host_arch())
    links = {out / "lib" / lib: found[lib] for lib in LIBS} | {out / "include": found["include"]}
    for lib in _ALL_GPU_LIBS:
        if (Path(tvm.__file__).parent / "lib" / lib).exists():
            links[out / "lib" / lib] = Path(tvm.__file__).parent / "lib" / lib
    if all(link.is_symlink() and link.resolve() == src.resolve() for link, src in links.items()):
        return out
    with _staged(out) as staging:
        (staging / "lib").mkdir()
        for link, src in links.items():
            (staging / link.relative_to(out)).symlink_to(src.resolve())
        record = {"versions": runtime_versions(), "source": "the installed tvm and tvm_ffi packages"}
        (staging / "manifest.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def host_arch() -> str:
    """This machine's architecture, named as targets name it (without importing TVM)."""
    import platform

    return {"arm64": "aarch64", "armv7l": "armv7", "armv8l": "armv7"}.get(platform.machine(), platform.machine())


def runtime_dir(arch: str) -> Path:
    """lib/ and include/ of the TVM runtime for `arch`: the host's from its packages, others fetched."""
    return host_runtime() if arch == host_arch() else fetch(arch)


def cached() -> list[dict]:
    """The runtimes in the cache: arch, folder, versions (empty when incomplete), whether they match this TVM."""
    root = cache_root()
    found = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not d.is_dir() or d.name.startswith("."):
            continue
        try:
            versions = json.loads((d / "manifest.json").read_text()).get("versions", {})
        except (OSError, ValueError, AttributeError):
            versions = {}
        usable = _complete(d) and (versions == runtime_versions() or d.name not in WHEEL_PLATFORM)
        found.append({"arch": d.name, "path": str(d), "versions": versions, "usable": usable})
    return found


@_cache_locked
def fetch(arch: str, refresh: bool = False) -> Path:
    """The cached runtime for `arch` (lib/ with the TVM runtime libraries, include/ with the FFI headers),
    downloading the registry wheels that match this TVM when it is not cached yet (or `refresh`)."""
    if arch not in WHEEL_PLATFORM and _complete(cache_dir(arch)):
        return cache_dir(arch)
    if arch not in WHEEL_PLATFORM:
        raise EmberError(
            f"no prebuilt TVM runtime for {arch}: the registry has wheels for aarch64 only", hint=_build_hint(arch)
        )
    out = cache_dir(arch)
    manifest = out / "manifest.json"
    versions = runtime_versions()
    if not refresh and manifest.exists() and json.loads(manifest.read_text()).get("versions") == versions:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        cmd += ["--platform", WHEEL_PLATFORM[arch], "--python-version", f"{sys.version_info[0]}.{sys.version_info[1]}"]
        cmd += [f"{name}=={v}" for name, v in versions.items()] + ["-d", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["pip failed"])[-1]
            wheels = " and ".join(f"{name} {v}" for name, v in versions.items())
            raise EmberError(
                f"cannot download the {arch} TVM runtime (the {wheels} wheels): {last}",
                hint=f"connect to the network or set PIP_INDEX_URL to a reachable index, then run "
                f"'ember runtime fetch --arch {arch}'; or copy a fetched {out} here from another machine",
            )
        with _staged(out) as staging:
            _extract(Path(tmp), staging)
            libs = sorted(p.name for p in (staging / "lib").iterdir())
            record = {"versions": versions, "sha256": {lib: sha256_file(staging / "lib" / lib) for lib in libs}}
            (staging / "manifest.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def _parent(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A staging folder beside `out` that replaces it when the block succeeds and is removed when it fails."""
    staging = Path(tempfile.mkdtemp(prefix=".runtime-", dir=_parent(out)))
    try:
        yield staging
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _extract(wheels: Path, dest: Path) -> None:
    (dest / "lib").mkdir(parents=True)
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                base = os.path.basename(name)
                if (base in LIBS or base in _ALL_GPU_LIBS) and "/lib/" in name:
                    (dest / "lib" / base).write_bytes(z.read(name))
                elif name.startswith("tvm_ffi/include/") and not name.endswith("/"):
                    target = dest / "include" / name[len("tvm_ffi/include/") :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(name))
    missing = [lib for lib in LIBS if not (dest / "lib" / lib).exists()]
    if missing:
        raise EmberError(f"the downloaded wheels hold no {', '.join(missing)}")


def gxx_name(arch: str) -> str:
    """The g++ that builds programs for `arch`: the host's own, or the cross compiler."""
    return "g++" if arch == host_arch() else CROSS_GXX.get(arch, f"{arch}-linux-gnu-g++")


def compiler_for(arch: str) -> str:
    """`gxx_name(arch)`, checked to be installed."""
    gxx = gxx_name(arch)
    if shutil.which(gxx) is None:
        package = "g++" if gxx == "g++" else f"g++-{gxx.removesuffix('-g++')}"
        raise EmberError(
            f"{gxx} is not installed; building the {arch} runner needs it", hint=f"apt-get install {package}"
        )
    return gxx


def make_runner(folder: Path, arch: str, runtime: Path | str = "runtime") -> Path:
    """Build `runner` for `arch` in a folder holding runner.cc and the bundle Makefile, against `runtime`."""
    if shutil.which("make") is None:
        raise EmberError("make is not installed; building the runner needs it", hint="apt-get install make")
    cmd = ["make", "-s", "-C", str(folder), f"CXX={compiler_for(arch)}", f"TVM_RUNTIME_DIR={runtime}", "runner"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        detail = " ".join(r.stderr.strip().splitlines()[-3:])[-300:]
        raise EmberError(f"building the {arch} runner failed: {detail}", file=str(folder))
    return folder / "runner"


@_cache_locked
def build_runner(arch: str) -> Path:
    """The runner executable for `arch`, cross-compiled once against the cached runtime."""
    rt = runtime_dir(arch)
    exe = rt / "runner"
    if exe.exists() and exe.stat().st_mtime >= max(RUNNER_SOURCE.stat().st_mtime, MAKEFILE.stat().st_mtime):
        return exe
    with tempfile.TemporaryDirectory(prefix=".runner-", dir=rt) as tmp:
        for src in (RUNNER_SOURCE, MAKEFILE):
            shutil.copy2(src, Path(tmp) / src.name)
        os.replace(make_runner(Path(tmp), arch, rt), exe)
    return exe


def runtime_libs(rt: Path, device: str) -> list[Path]:
    """The libraries a `device` bundle runs with, from the TVM runtime in `rt` (a folder named after its arch):
    TVM's runtime, for a GPU its runtime module, and for this machine's arch the GPU vendor's runtime that
    module links (CUDA: libcudart), resolved here; the GPU driver (libcuda), and another arch's libcudart, are
    the board's."""
    names = GPU_LIBS.get(device, ())
    if rt.name in WHEEL_PLATFORM and not all((rt / "lib" / name).exists() for name in names):
        rt = fetch(rt.name, refresh=True)  # cached before Ember kept the GPU runtime modules
    missing = [name for name in names if not (rt / "lib" / name).exists()]
    if missing:
        raise EmberError(
            f"the {rt.name} TVM runtime has no {missing[0]}, so it cannot run {device} bundles",
            hint=f"build TVM with USE_{device.upper()}=ON and put {missing[0]} in {rt / 'lib'}",
        )
    found = [rt / "lib" / name for name in (*LIBS, *names)]
    if rt.name != host_arch():
        return found
    for lib in [rt / "lib" / name for name in names]:
        try:
            r = subprocess.run(["ldd", str(lib)], capture_output=True, text=True)
        except OSError as e:
            raise EmberError(
                f"cannot run ldd to find the libraries {lib.name} links: {e.strerror}", hint="apt-get install libc-bin"
            ) from e
        for line in r.stdout.splitlines():
            name, _, where = line.strip().partition(" => ")
            if name.startswith("libcudart"):
                if not where.startswith("/"):
                    raise EmberError(
                        f"{lib.name} needs {name} (the CUDA runtime), which is not installed here",
                        hint=f"install CUDA {name.rsplit('.', 1)[-1]}'s runtime (pip install "
                        f"nvidia-cuda-runtime, or the CUDA toolkit) or add its folder to LD_LIBRARY_PATH",
                    )
                found.append(Path(where.split(" (")[0]))
    return found


def cuda_driver_present() -> bool:
    import ctypes.util

    return ctypes.util.find_library("cuda") is not None


def run_bundle(
    bundle: Path, arch: str, inputs: list[np.ndarray], runs: int = 0, device: str = "cpu"
) -> tuple[list[np.ndarray], str]:
    """Run the bundle's model.so through the runner: under qemu-user when `arch` is not this machine's, on the
    GPU with `device` "cuda" (once, plus `runs` timed runs); outputs and the runner's summary line."""
    emulated = arch != host_arch()
    qemu = QEMU.get(arch)
    if emulated and (qemu is None or shutil.which(qemu) is None):
        raise EmberError(f"{qemu or 'qemu-user'} is not installed", hint="apt-get install qemu-user")
    if device == "cuda" and not cuda_driver_present():
        raise EmberError(
            "no CUDA driver (libcuda.so) on this machine, so the cuda bundle cannot run here",
            hint="run it on the GPU machine: compile with --standalone, copy the folder there and run "
            "./runner --device cuda model.so out 10 input0.npy ...",
        )
    lib = bundle / "model.so"
    if not lib.exists():
        raise EmberError(f"bundle has no model.so to run{f' under {qemu}' if emulated else ''}", file=str(bundle))
    found = elf_arch(lib)
    if found != arch:
        raise EmberError(
            f"'model.so' is built for {found or 'an unknown format'}, not {arch}; "
            f"{qemu if emulated else 'this machine'} cannot run it",
            file=str(bundle),
            hint=f"recompile with --target for {arch}" if found else "recompile the bundle",
        )
    runner = build_runner(arch)
    libs = runtime_libs(runner.parent, device)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for f in (runner, *libs):
            shutil.copy2(f, work / f.name)
        shutil.copy2(lib, work / "model.so")
        names = []
        for i, arr in enumerate(inputs):
            np.save(work / f"input{i}.npy", np.ascontiguousarray(arr))
            names.append(f"input{i}.npy")
        prefix = [qemu, "-L", SYSROOT[arch]] if emulated else []
        cmd = [*prefix, "./runner", "--device", device, "./model.so", ".", str(runs), *names]
        env = dict(os.environ)
        if device != "cpu":  # libtvm_runtime_cuda.so finds libcudart beside it
            env["LD_LIBRARY_PATH"] = ":".join(filter(None, [tmp, os.environ.get("LD_LIBRARY_PATH")]))
        r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            how = "emulated run" if emulated else f"{device} run"
            raise EmberError(f"{how} failed: {(r.stderr.strip().splitlines() or ['no output'])[-1][:300]}")
        outputs = [np.load(p) for p in sorted(work.glob("output*.npy"), key=lambda p: int(p.stem[6:]))]
    return outputs, r.stdout.strip()
