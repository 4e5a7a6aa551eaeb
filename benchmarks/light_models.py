"""Compile time and host latency of every onnx `light/` model, next to onnxruntime, in one run.

    python benchmarks/light_models.py [--threads 2] [--models squeezenet,resnet50]

Weights are seeded random (the shipped files fill them with a constant). Ember and onnxruntime use
the same thread count; latency is the median over repeated runs after one warm-up.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from ember.bench import timed_runs
from ember.models import LIGHT_MODELS, random_light_model


def ort_session(model, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def median_ms(fn, runs: int) -> float:
    fn()
    return float(np.median(timed_runs(fn, runs)) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(LIGHT_MODELS))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    import ember

    table = Table(title=f"onnx light/ models, host CPU, {args.threads} threads, batch 1")
    for col in ("model", "nodes (ember IR)", "compile s", "ember ms", "onnxruntime ms", "ember/ort", "max |err|"):
        table.add_column(col, justify="right")
    for name in args.models.split(","):
        model = random_light_model(name, seed=0)
        x = np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32)
        inits = {t.name for t in model.graph.initializer}
        feeds = {next(i.name for i in model.graph.input if i.name not in inits): x}
        start = time.perf_counter()
        artifact = ember.compile(model, "host")
        compile_s = time.perf_counter() - start
        sess = ort_session(model, args.threads)
        want = sess.run(None, feeds)[0]
        got = artifact.run(feeds)[artifact.output_names[0]]
        ember_ms = median_ms(lambda: artifact.run(feeds), args.runs)
        ort_ms = median_ms(lambda: sess.run(None, feeds), max(args.runs, 10))
        table.add_row(
            name,
            str(len(artifact.graph.nodes)),
            f"{compile_s:.1f}",
            f"{ember_ms:.1f}",
            f"{ort_ms:.2f}",
            f"{ember_ms / ort_ms:.1f}x",
            f"{np.abs(got - want).max():.1e}",
        )
        Console(width=120).print(f"{name}: done", style="dim")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
