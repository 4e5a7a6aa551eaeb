"""`make demo`: compile a real topology (SqueezeNet 1.0, seeded random weights) for aarch64 and for this
host with the `ember` CLI, run the host build, and compare it with onnxruntime."""

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
    ember_ms = np.median(artifact.benchmark({"data_0": x}, number=5, repeat=3)) * 1e3
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(model_path), opts)
    want = sess.run(None, {"data_0": x})[0]
    start = time.perf_counter()
    for _ in range(10):
        sess.run(None, {"data_0": x})
    ort_ms = (time.perf_counter() - start) / 10 * 1e3
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
