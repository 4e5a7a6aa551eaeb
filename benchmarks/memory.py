"""Peak memory (RSS) of compiling ResNet-50 and of loading a model with large external data.

    python benchmarks/memory.py [--external-mb 1024] [--compile-external] [--skip-resnet]

Each measurement runs in a fresh child process (VmHWM of that process: its peak resident set,
interpreter and libraries included; file pages it maps and touches count too). ResNet-50 is onnx's
`light_resnet50.onnx` with seeded random weights (about 100 MB), compiled for the host at -O2. The external
data model is generated in a temporary folder and deleted after: a chain of Adds over float32 initializers
stored in one `weights.bin`. Peak RSS is stable from run to run; compile time depends on machine load.
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
        graph = import_model(path)
        nodes = len(graph.nodes)
    else:
        nodes = len(ember.compile(path, "host").graph.nodes)
    seconds = time.perf_counter() - start
    print(json.dumps({"baseline_mb": baseline, "peak_mb": _status_mb("VmHWM"), "seconds": seconds, "nodes": nodes}))


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
    for col in ("measurement", "baseline MiB", "peak RSS MiB", "target", "result", "seconds"):
        table.add_column(col, justify="left" if col == "measurement" else "right")
    with tempfile.TemporaryDirectory(prefix="ember-mem-") as tmp:
        if not args.skip_resnet:
            r = measure("compile", write_resnet50(Path(tmp)))
            table.add_row(
                "compile ResNet-50, host, -O2",
                f"{r['baseline_mb']:.0f}",
                f"{r['peak_mb']:.0f}",
                f"<= {RESNET_TARGET_MB} MiB",
                _verdict(r["peak_mb"] <= RESNET_TARGET_MB),
                "",
            )
            table.add_row(
                "  compile time",
                "",
                "",
                f"<= {RESNET_TARGET_S} s",
                _verdict(r["seconds"] <= RESNET_TARGET_S),
                f"{r['seconds']:.1f}",
            )
        for action in ("load", "compile") if args.compile_external else ("load",):
            folder = Path(tmp) / f"external-{action}"
            folder.mkdir()
            path = write_external_data_model(folder, args.external_mb)
            data_mb = (folder / "weights.bin").stat().st_size / MB
            r = measure(action, path)
            ratio = r["peak_mb"] / data_mb
            table.add_row(
                f"{action} model with {data_mb:.0f} MiB external data",
                f"{r['baseline_mb']:.0f}",
                f"{r['peak_mb']:.0f} ({ratio:.2f}x data)",
                f"<= {EXTERNAL_RATIO_TARGET}x",
                _verdict(ratio <= EXTERNAL_RATIO_TARGET),
                f"{r['seconds']:.1f}",
            )
            for p in folder.iterdir():
                p.unlink()
    Console(width=160).print(table)
    print("Peak RSS repeats within a few MiB; seconds vary with machine load.")


def _verdict(ok: bool) -> str:
    return "pass" if ok else "MISS"


if __name__ == "__main__":
    main()
