"""The C++ side of a CPU or CUDA bundle: runner.cc, its Makefile and README.txt, and with `standalone` the
target's TVM runtime (CUDA: with TVM's CUDA module and libcudart) in runtime/ plus a runner built for the
target, so the folder runs on a board without Python."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ember.backends.artifact import sha256_file
from ember.backends.runtime import (
    MAKEFILE,
    RUNNER_SOURCE,
    compiler_for,
    gxx_name,
    host_arch,
    make_runner,
    runtime_dir,
    runtime_libs,
    runtime_versions,
)
from ember.errors import EmberError

README = Path(__file__).with_name("bundle_readme.txt")


def write_runner_files(folder: Path, metadata: dict[str, Any], standalone: bool) -> dict[str, Any]:
    """Write the runner sources (and, standalone, the runtime and a built runner) into a bundle being saved;
    returns what metadata.json records about them."""
    arch = metadata["target"]["arch"]
    for src in (RUNNER_SOURCE, MAKEFILE):
        shutil.copy2(src, folder / src.name)
    record: dict[str, Any] = {"files": ["runner.cc", "Makefile", "README.txt"], "standalone": standalone}
    if standalone:
        compiler_for(arch)  # a missing compiler fails before the runtime is fetched
        if metadata["library"] != "model.so":
            raise EmberError("a standalone bundle needs model.so, not model.tar", hint="recompile with --standalone")
        rt = runtime_dir(arch)
        libs = runtime_libs(rt, metadata["target"]["device"])
        (folder / "runtime" / "lib").mkdir(parents=True)
        for lib in libs:
            shutil.copy2(lib, folder / "runtime" / "lib" / lib.name)
        shutil.copytree(rt / "include", folder / "runtime" / "include")
        make_runner(folder, arch)
        record["files"] += ["runner", "runtime/"]
        record["runtime"] = {
            "versions": runtime_versions(),
            "sha256": {f"runtime/lib/{p.name}": sha256_file(folder / "runtime" / "lib" / p.name) for p in libs},
        }
    (folder / "README.txt").write_text(_readme(metadata, standalone))
    return record


def _readme(metadata: dict[str, Any], standalone: bool) -> str:
    arch, device = metadata["target"]["arch"], metadata["target"]["device"]
    fmt = lambda v: f"  {v['name']}: {v['dtype']} {v['shape']}"
    fetched = f"$HOME/.cache/ember/runtime/{arch}"
    fetch_note = (
        ""
        if standalone
        else "\nThis bundle has no runtime/: compile with --standalone to include one, or build runner on a PC:\n"
        f"  ember runtime fetch --arch {arch}\n"
        f"  make CXX={gxx_name(arch)} TVM_RUNTIME_DIR={fetched}\n"
        f"then copy runner and {fetched}/lib/*.so into this folder before copying it to the board.\n"
    )
    return README.read_text().format(
        model=metadata.get("model", {}).get("name", "model"),
        target=metadata["target"]["name"],
        arch=arch,
        device=device,
        device_flag="" if device == "cpu" else f"--device {device} ",
        runtime_line=f"  runtime/        the TVM runtime for {arch} (lib/, include/)\n"
        f"  runner          runner.cc built for {arch}\n"
        if standalone
        else "",
        build_step="make            (runner is prebuilt here; make -B rebuilds it)" if standalone else "make",
        input_files=" ".join(f"input{i}.npy" for i in range(len(metadata["inputs"]))),
        inputs="\n".join(f"{fmt(v)}  -> input{i}.npy" for i, v in enumerate(metadata["inputs"])),
        outputs="\n".join(f"{fmt(v)}  -> out/output{i}.npy" for i, v in enumerate(metadata["outputs"])),
        fetch_note=fetch_note,
        gpu_note=_gpu_note(device, standalone and arch == host_arch()),
    )


def _gpu_note(device: str, cudart_inside: bool) -> str:
    if device != "cuda":
        return ""
    needs = "the NVIDIA driver (libcuda.so.1)"
    if not cudart_inside:
        needs += " and the CUDA runtime that libtvm_runtime_cuda.so links (libcudart.so.13: CUDA toolkit or JetPack)"
    return f"--device cuda runs on GPU 0 and times each run to the GPU's completion; the board needs {needs}.\n"
