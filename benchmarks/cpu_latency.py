"""CPU latency of Ember with its schedules, TVM's default build, and onnxruntime, one table per run.

    python benchmarks/cpu_latency.py [--threads 2] [--runs 20] [--models squeezenet,resnet50,mobilenet_v2,bert]
                                     [--tune-trials N [--tune-dir DIR]]

Each measurement runs in its own process (two runtimes' thread pools in one process slow each other
down on a small machine), on the same seeded inputs; the table gives median ms and the ratio to
onnxruntime. "TVM default" is Ember's lowering without Ember's schedules, in NCHW (EMBER_SCHEDULES=0).
With --tune-trials N, each model is first tuned by `ember tune --trials N` (MetaSchedule, N measurements
split over the kernels by FLOPs; the budget and tuning time are in the table) into DIR/<model> (kept, so a
second run with the same DIR reuses it), and "Ember tuned" is `ember compile --tuning-db` on that database.
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


def measure(path: str, engine: str, threads: int, runs: int, tuning_db: str | None = None) -> dict:
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
        layout = "NCHW" if engine == "tvm" else None
        artifact = ember.compile(model, "host", layout=layout, tuning_db=tuning_db if engine == "tuned" else None)
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


def in_subprocess(path: str, engine: str, threads: int, runs: int, tuning_db: str = "") -> dict:
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), EMBER_SCHEDULES="0" if engine == "tvm" else "1")
    cmd = [sys.executable, __file__, "--measure", path, engine, str(threads), str(runs), tuning_db]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{engine} on {path} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def tune(path: str, db: Path, trials: int) -> float:
    """`ember tune` MODEL into `db` with `trials` measurements (skipped when `db` already holds a tuning);
    returns the seconds it took (0 when reused)."""
    if (db / "ember_baselines.json").exists():
        return 0.0
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "ember.cli.main", "tune", path, "--trials", str(trials), "--db", str(db)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"ember tune on {path} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--tune-trials", type=int, default=0, help="tune each model first (0: no tuned column)")
    parser.add_argument("--tune-dir", help="where the tuning databases go (default: a temporary folder)")
    parser.add_argument("--measure", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        path, engine, threads, runs, db = args.measure
        print(json.dumps(measure(path, engine, int(threads), int(runs), db or None)))
        return
    console = Console(width=160)
    table = Table(title=f"host CPU latency, {args.threads} threads, batch 1, median of {args.runs} runs")
    cols = ["model", "Ember ms", "Ember/ort", "compile s"]
    if args.tune_trials:
        cols += [f"tuned ms ({args.tune_trials} trials)", "tuned/ort", "tuning s"]
    for col in (*cols, "TVM default ms", "TVM/ort", "onnxruntime ms"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            path = str(Path(tmp) / f"{name}.onnx")
            onnx.save(build_model(name), path)
            ort_ms = in_subprocess(path, "onnxruntime", args.threads, args.runs)["median_ms"]
            ember = in_subprocess(path, "ember", args.threads, args.runs)
            row = [
                name,
                f"{ember['median_ms']:.1f}",
                f"{ember['median_ms'] / ort_ms:.2f}x",
                f"{ember['compile_s']:.1f}",
            ]
            if args.tune_trials:
                db = Path(args.tune_dir or tmp) / name
                tuning_s = tune(path, db, args.tune_trials)
                tuned_ms = in_subprocess(path, "tuned", args.threads, args.runs, str(db))["median_ms"]
                row += [f"{tuned_ms:.1f}", f"{tuned_ms / ort_ms:.2f}x", f"{tuning_s:.0f}" if tuning_s else "reused"]
            tvm_runs = max(3, args.runs // 5)  # unscheduled code is slow; fewer runs keep this short
            tvm_ms = in_subprocess(path, "tvm", args.threads, tvm_runs)["median_ms"]
            table.add_row(*row, f"{tvm_ms:.1f}", f"{tvm_ms / ort_ms:.1f}x", f"{ort_ms:.1f}")
            console.print(f"{name}: done", style="dim")
    console.print(table)


if __name__ == "__main__":
    main()
