"""`make demo`: compile a real topology (SqueezeNet 1.0, seeded random weights) for aarch64 and for this
host with the `ember` CLI, run the host build, and compare it with onnxruntime: outputs here, latency as
benchmarks/cpu_latency.py takes it (each engine in its own process, 2 threads, taking turns)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

import ember
from ember.backends.artifact import elf_arch
from ember.models import random_light_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from cpu_latency import start_worker, take_turns  # noqa: E402

OUT = Path("demo-out")
EMBER = str(Path(sys.executable).parent / "ember")
console = Console(width=120)


def sh(*args: str) -> float:
    console.print(f"[bold]$ {' '.join(args)}[/bold]")
    start = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - start


def main() -> None:
    OUT.mkdir(exist_ok=True)
    model_path = OUT / "squeezenet.onnx"
    onnx.save(random_light_model("squeezenet", seed=0), str(model_path))
    rows = []
    for target in ("aarch64-linux-gnu", "host"):
        bundle = OUT / f"squeezenet-{target}"
        seconds = sh(EMBER, "compile", str(model_path), "--target", target, "-o", str(bundle))
        lib = next(p for p in bundle.iterdir() if p.name.startswith("model."))
        arch = elf_arch(lib) if lib.suffix == ".so" else "object archive (.tar)"
        rows.append([target, f"{lib.name} ({arch})", f"{lib.stat().st_size / 1e6:.1f} MB", f"{seconds:.1f} s"])
    sh(EMBER, "run", str(OUT / "squeezenet-host"))

    x = np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32)
    artifact = ember.load(OUT / "squeezenet-host")
    got = artifact.run({"data_0": x})["softmaxout_1"]
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"data_0": x})[0]
    console.print("timing Ember and onnxruntime in turns, each in its own process (2 threads, 20 runs)")
    workers = {engine: start_worker(str(model_path), engine, 2)[0] for engine in ("ember", "onnxruntime")}
    medians = take_turns(workers, runs=20, block=5)
    ember_ms, ort_ms = medians["ember"], medians["onnxruntime"]
    err = float(np.abs(got - want).max())

    table = Table(title="SqueezeNet 1.0 (onnx light topology, seeded weights)")
    for col in ("target", "library", "size", "compile", "host latency", "onnxruntime", "max |err| vs onnxruntime"):
        table.add_column(col)
    for row in rows:
        host = row[0] == "host"
        table.add_row(
            *row,
            f"{ember_ms:.1f} ms" if host else "-",
            f"{ort_ms:.1f} ms" if host else "-",
            f"{err:.2e}" if host else "-",
        )
    console.print(table)
    top_e, top_o = int(got.reshape(-1).argmax()), int(want.reshape(-1).argmax())
    console.print(f"top-1 class: ember {top_e}, onnxruntime {top_o}; bundles are in {OUT}/")
    if err > 1e-4 or top_e != top_o:
        sys.exit("demo: Ember's output differs from onnxruntime's")
    if shutil.which("qemu-aarch64"):
        console.print("qemu-aarch64 is installed: cross-built bundles can be checked under emulation.")


if __name__ == "__main__":
    main()
