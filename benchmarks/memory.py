"""Peak memory (RSS) of compiling ResNet-50 and of loading a model with large external data.

    python benchmarks/memory.py [--external-mb 1024] [--compile-external] [--skip-resnet]

Each measurement runs in a fresh child process (VmHWM of that process: its peak resident set,
interpreter and libraries included; file pages it maps and touches count too). ResNet-50 is onnx's
`light_resnet50.onnx` with seeded random weights (about 100 MB), compiled for the host at -O2. The external
data model is generated in a temporary folder and deleted after: a chain of Adds over float32 initializers
stored in one `weights.bin`. A compile row reports the peak once compiled and once the bundle is written (as
`ember compile -o` does; seconds in parentheses: the save). Peak RSS is stable from run to run; times depend
on machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

MB = 1 << 20
RESNET_TARGET_MB = 2048
RESNET_TARGET_S = 60
EXTERNAL_RATIO_TARGET = 1.5


def write_external_data_model(folder: Path, total_mb: int, chunk_mb: int = 64) -> Path:
    """A model `y = x + w0 + w1 + ...` whose float32 weights (`total_mb` in all, `chunk_mb` each) live in
    folder/weights.bin; written chunk by chunk so the generator itself stays small."""
    n = chunk_mb * MB // 4
    chunks = max(1, total_mb // chunk_mb)
    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    with open(folder / "weights.bin", "wb") as f:
        for i in range(chunks):
            offset = f.tell()
            f.write(rng.random(n, dtype=np.float32).tobytes())
            init = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[n])
            init.data_location = TensorProto.EXTERNAL
            for key, value in (("location", "weights.bin"), ("offset", str(offset)), ("length", str(n * 4))):
                init.external_data.add(key=key, value=value)
            inits.append(init)
            out = "y" if i == chunks - 1 else f"s{i}"
            nodes.append(helper.make_node("Add", [prev, f"w{i}"], [out], name=f"add{i}"))
            prev = out
    graph = helper.make_graph(
        nodes,
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


def write_resnet50(folder: Path) -> Path:
    from ember.models import random_light_model

    path = folder / "resnet50.onnx"
    onnx.save(random_light_model("resnet50", seed=0), str(path))
    return path


def _status_mb(field: str) -> float:
    """VmHWM (peak) or VmRSS (now) of this process, MiB. Unlike ru_maxrss, VmHWM starts afresh at exec
    rather than inheriting the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(action: str, path: str) -> None:
    """Runs in the measured process: import, note the baseline, do `action`, print JSON."""
    import ember
    from ember.driver import import_model

    baseline = _status_mb("VmRSS")
    start = time.perf_counter()
    if action == "load":
        nodes = len(import_model(path).nodes)
        compile_peak, save_s = _status_mb("VmHWM"), 0.0
    else:  # what `ember compile -o` does: compile, then write the bundle
        artifact = ember.compile(path, "host")
        nodes, compile_peak, compiled = len(artifact.graph.nodes), _status_mb("VmHWM"), time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="ember-mem-bundle-") as out:
            artifact.save(Path(out) / "bundle")
        save_s = time.perf_counter() - compiled
    seconds = time.perf_counter() - start - save_s
    peak = _status_mb("VmHWM")
    result = {"baseline_mb": baseline, "compile_peak_mb": compile_peak, "peak_mb": peak, "nodes": nodes}
    print(json.dumps(result | {"seconds": seconds, "save_seconds": save_s}))


def measure(action: str, path: Path) -> dict:
    """Peak RSS (MiB) and seconds of `action` ('load' or 'compile') on `path`, in a fresh process."""
    r = subprocess.run(
        [sys.executable, __file__, "--child", action, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS", "2")},
    )
    if r.returncode != 0:
        raise RuntimeError(f"{action} {path.name} failed: {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--external-mb", type=int, default=1024, help="Size of the external data, MiB.")
    parser.add_argument("--compile-external", action="store_true", help="Also compile the external-data model.")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("ACTION", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Ember peak memory (VmHWM of a fresh process; baseline: RSS after importing ember)")
    for col in ("measurement", "baseline MiB", "peak, compiled MiB", "peak, bundle saved MiB", "target", "result", "s"):
        table.add_column(col, justify="left" if col == "measurement" else "right")
    with tempfile.TemporaryDirectory(prefix="ember-mem-") as tmp:
        if not args.skip_resnet:
            r = measure("compile", write_resnet50(Path(tmp)))
            ok = r["peak_mb"] <= RESNET_TARGET_MB
            row = [f"{r['baseline_mb']:.0f}", f"{r['compile_peak_mb']:.0f}", f"{r['peak_mb']:.0f}"]
            table.add_row("compile ResNet-50, host, -O2", *row, f"<= {RESNET_TARGET_MB} MiB", _verdict(ok), "")
            ok = r["seconds"] <= RESNET_TARGET_S
            table.add_row("  compile time (save)", "", "", "", f"<= {RESNET_TARGET_S} s", _verdict(ok), _secs(r))
        for action in ("load", "compile") if args.compile_external else ("load",):
            folder = Path(tmp) / f"external-{action}"
            folder.mkdir()
            path = write_external_data_model(folder, args.external_mb)
            data_mb = (folder / "weights.bin").stat().st_size / MB
            r = measure(action, path)
            peaks = [f"{r[k]:.0f} ({r[k] / data_mb:.2f}x)" for k in ("compile_peak_mb", "peak_mb")]
            ok = r["peak_mb"] <= EXTERNAL_RATIO_TARGET * data_mb
            row = [f"{r['baseline_mb']:.0f}", peaks[0], peaks[1] if action == "compile" else "-"]
            name = f"{action} model with {data_mb:.0f} MiB external data"
            table.add_row(name, *row, f"<= {EXTERNAL_RATIO_TARGET}x data", _verdict(ok), _secs(r))
            for p in folder.iterdir():
                p.unlink()
    Console(width=160).print(table)
    print("Peak RSS repeats within a few MiB; seconds vary with machine load.")


def _secs(r: dict) -> str:
    return f"{r['seconds']:.1f}" + (f" ({r['save_seconds']:.1f})" if r["save_seconds"] else "")


def _verdict(ok: bool) -> str:
    return "pass" if ok else "MISS"


if __name__ == "__main__":
    main()
