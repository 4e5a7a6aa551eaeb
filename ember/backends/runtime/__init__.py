"""TVM runtimes for other architectures, the C++ bundle runner, and emulated runs under qemu-user.

The registry's aarch64 wheels of apache-tvm / apache-tvm-ffi carry `libtvm_runtime.so` and `libtvm_ffi.so`;
`fetch` extracts them (with the FFI headers) into a cache, `build_runner` cross-compiles `runner.cc`
against them, and `run_emulated` runs a bundle's `model.so` through that runner under qemu.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ember.errors import EmberError

RUNNER_SOURCE = Path(__file__).with_name("runner.cc")
WHEEL_PLATFORM = {"aarch64": "manylinux_2_28_aarch64"}
QEMU = {"aarch64": "qemu-aarch64", "armv7": "qemu-arm"}
SYSROOT = {"aarch64": "/usr/aarch64-linux-gnu", "armv7": "/usr/arm-linux-gnueabihf"}
CROSS_GXX = {"aarch64": "aarch64-linux-gnu-g++", "armv7": "arm-linux-gnueabihf-g++"}
LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")


def cache_dir(arch: str) -> Path:
    root = Path(os.environ.get("EMBER_CACHE", Path.home() / ".cache" / "ember"))
    return root / "runtime" / arch


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {"apache-tvm": version("apache-tvm"), "apache-tvm-ffi": version("apache-tvm-ffi")}


def fetch(arch: str) -> Path:
    """The cached runtime for `arch` (lib/ with the TVM runtime libraries, include/ with the FFI headers),
    downloading the registry wheels that match this TVM when it is not cached yet."""
    if arch not in WHEEL_PLATFORM:
        raise EmberError(
            f"no prebuilt TVM runtime for {arch}: the registry has wheels for aarch64 only",
            hint="build libtvm_runtime.so from TVM's sources with the target's cross compiler",
        )
    out = cache_dir(arch)
    manifest = out / "manifest.json"
    versions = _versions()
    if manifest.exists() and json.loads(manifest.read_text()).get("versions") == versions:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        cmd += ["--platform", WHEEL_PLATFORM[arch], "--python-version", f"{sys.version_info[0]}.{sys.version_info[1]}"]
        cmd += [f"{name}=={v}" for name, v in versions.items()] + ["-d", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise EmberError(f"cannot download the {arch} TVM runtime wheels: {last}", hint="check network access")
        staging = Path(tempfile.mkdtemp(prefix=".runtime-", dir=_parent(out)))
        try:
            _extract(Path(tmp), staging)
            record = {"versions": versions, "sha256": {lib: _sha256(staging / "lib" / lib) for lib in LIBS}}
            (staging / "manifest.json").write_text(json.dumps(record, indent=2) + "\n")
            shutil.rmtree(out, ignore_errors=True)
            staging.rename(out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return out


def _parent(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent


def _extract(wheels: Path, dest: Path) -> None:
    (dest / "lib").mkdir(parents=True)
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                base = os.path.basename(name)
                if base in LIBS and "/lib/" in name:
                    (dest / "lib" / base).write_bytes(z.read(name))
                elif name.startswith("tvm_ffi/include/") and not name.endswith("/"):
                    target = dest / "include" / name[len("tvm_ffi/include/") :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(name))
    missing = [lib for lib in LIBS if not (dest / "lib" / lib).exists()]
    if missing:
        raise EmberError(f"the downloaded wheels hold no {', '.join(missing)}")


def _sha256(path: Path) -> str:
    from ember.backends.artifact import sha256_file

    return sha256_file(path)


def build_runner(arch: str) -> Path:
    """The runner executable for `arch`, cross-compiled once against the cached runtime."""
    rt = fetch(arch)
    exe = rt / "runner"
    if exe.exists() and exe.stat().st_mtime >= RUNNER_SOURCE.stat().st_mtime:
        return exe
    gxx = CROSS_GXX[arch]
    if shutil.which(gxx) is None:
        raise EmberError(f"{gxx} is not installed", hint=f"apt-get install g++-{gxx.removesuffix('-g++')}")
    tmp = exe.with_suffix(".tmp")
    cmd = [gxx, "-std=c++17", "-O2", f"-I{rt / 'include'}", str(RUNNER_SOURCE), "-o", str(tmp)]
    cmd += [f"-L{rt / 'lib'}", "-ltvm_ffi", "-ltvm_runtime", "-Wl,-rpath,$ORIGIN"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise EmberError(f"building the {arch} runner failed: {r.stderr.strip()[-300:]}")
    tmp.rename(exe)
    return exe


def run_emulated(bundle: Path, arch: str, inputs: list[np.ndarray], runs: int = 1) -> tuple[list[np.ndarray], str]:
    """Run the bundle's model.so under qemu-user through the runner; outputs and the runner's latency line."""
    qemu = QEMU.get(arch)
    if qemu is None or shutil.which(qemu) is None:
        raise EmberError(f"{qemu or 'qemu-user'} is not installed", hint="apt-get install qemu-user")
    runner = build_runner(arch)
    lib = bundle / "model.so"
    if not lib.exists():
        raise EmberError(f"bundle has no model.so to run under {qemu}", file=str(bundle))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for f in (runner, *(runner.parent / "lib" / name for name in LIBS)):
            shutil.copy2(f, work / f.name)
        shutil.copy2(lib, work / "model.so")
        names = []
        for i, arr in enumerate(inputs):
            np.save(work / f"input{i}.npy", np.ascontiguousarray(arr))
            names.append(f"input{i}.npy")
        cmd = [qemu, "-L", SYSROOT[arch], "./runner", "./model.so", ".", str(runs), *names]
        r = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        if r.returncode != 0:
            raise EmberError(f"emulated run failed: {(r.stderr.strip().splitlines() or ['no output'])[-1][:300]}")
        outputs = [np.load(p) for p in sorted(work.glob("output*.npy"), key=lambda p: int(p.stem[6:]))]
    return outputs, r.stdout.strip()
