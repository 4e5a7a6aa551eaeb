"""CPU latency of Ember with its schedules, TVM's default build, and onnxruntime, one table per run.

    python benchmarks/cpu_latency.py [--threads 2] [--runs 20] [--models squeezenet,resnet50,mobilenet_v2,bert]

Each measurement runs in its own process (two runtimes' thread pools in one process slow each other
down on a small machine), on the same seeded inputs; the table gives median ms and the ratio to
onnxruntime. "TVM default" is Ember's lowering without Ember's schedules, in NCHW (EMBER_SCHEDULES=0).
Tuned builds are not listed: Ember has no tuning path yet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from rich.console import Console
from rich.table import Table

from ember.models import random_feeds

MODELS = ("squeezenet", "resnet50", "mobilenet_v2", "bert")


def build_model(name: str) -> onnx.ModelProto:
    from ember.models import random_light_model
    from ember.models.blocks import bert_layer, mobilenet_v2

    if name == "mobilenet_v2":
        return mobilenet_v2()
    if name == "bert":
        return bert_layer()
    return random_light_model(name)


def measure(path: str, engine: str, threads: int, runs: int) -> dict:
    """One engine on one model, in this process: compile seconds (Ember) and per-run milliseconds."""
    model = onnx.load(path)
    feeds = random_feeds(model, seed=1)
    compile_s = 0.0
    if engine == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        run = lambda: session.run(None, feeds)  # noqa: E731
    else:
        import ember

        start = time.perf_counter()
        artifact = ember.compile(model, "host", layout="NCHW" if engine == "tvm" else None)
        compile_s = time.perf_counter() - start
        run = artifact.runner(feeds)
    for _ in range(2):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": float(np.median(times)), "compile_s": compile_s}


def in_subprocess(path: str, engine: str, threads: int, runs: int) -> dict:
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), EMBER_SCHEDULES="0" if engine == "tvm" else "1")
    cmd = [sys.executable, __file__, "--measure", path, engine, str(threads), str(runs)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{engine} on {path} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        path, engine, threads, runs = args.measure
        print(json.dumps(measure(path, engine, int(threads), int(runs))))
        return
    console = Console(width=140)
    table = Table(title=f"host CPU latency, {args.threads} threads, batch 1, median of {args.runs} runs")
    for col in ("model", "Ember ms", "Ember/ort", "compile s", "TVM default ms", "TVM/ort", "onnxruntime ms"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            path = str(Path(tmp) / f"{name}.onnx")
            onnx.save(build_model(name), path)
            ort_ms = in_subprocess(path, "onnxruntime", args.threads, args.runs)["median_ms"]
            ember = in_subprocess(path, "ember", args.threads, args.runs)
            tvm_runs = max(3, args.runs // 5)  # unscheduled code is slow; fewer runs keep this short
            tvm_ms = in_subprocess(path, "tvm", args.threads, tvm_runs)["median_ms"]
            table.add_row(
                name,
                f"{ember['median_ms']:.1f}",
                f"{ember['median_ms'] / ort_ms:.2f}x",
                f"{ember['compile_s']:.1f}",
                f"{tvm_ms:.1f}",
                f"{tvm_ms / ort_ms:.1f}x",
                f"{ort_ms:.1f}",
            )
            console.print(f"{name}: done", style="dim")
    console.print(table)


if __name__ == "__main__":
    main()
