"""CPU latency of Ember with its schedules, TVM's default build, and onnxruntime, one table per run.

    python benchmarks/cpu_latency.py [--threads 2] [--runs 40] [--block 5]
                                     [--models squeezenet,resnet50,mobilenet_v2,bert] [--tune-trials N [--tune-dir DIR]]

`--models` also takes models outside the default set: tc_resnet8 (keyword spotting on 40 MFCC x 101 frames, 1-D
convs), kws_lstm and kws_gru (keyword spotting with an LSTM or a GRU over 49 frames of 10 MFCCs), yolov8n
(YOLOv8n's backbone at 320x320: SiLU after every conv), r3d (an R3D video network, 3-D convs over 8 frames of
112x112) and unet3d (a 3-D U-Net over a 16x64x64 volume: 3-D convs, pools and transposed convs).

Each engine runs in its own process (two runtimes' thread pools in one process slow each other down on
a small machine), on the same seeded inputs. The processes stay up and take turns, `--block` runs at a
time, until each has `--runs`: load that comes and goes on a shared machine hits every engine alike, so
the ratio to onnxruntime holds even when the milliseconds do not. Which worker starts first still matters
on 2 cores, so each model is timed twice, onnxruntime's worker started first and then Ember's, and the
table gives the geometric mean of the two medians (and the ratio in each order). onnxruntime
keeps its default thread spinning (turning it off made it 16-30% slower here); between turns it is idle.
GFLOP counts each model's convs and matmuls as computed directly; the GFLOP/s beside it (Ember's, onnxruntime's)
read against numpy's float32 matmul on as many threads, printed under the table: a ratio below 0.8x needs Ember
at 1.25x onnxruntime's rate, past that ceiling where onnxruntime already runs near it (the BERT layer's matmuls).
"TVM default" is Ember's lowering without Ember's schedules, in NCHW (EMBER_SCHEDULES=0); it is about 10x
slower, so it is timed on its own, with fewer runs.
With --tune-trials N, each model is first tuned by `ember tune --trials N` (Ember's rule variants for each
kernel, then MetaSchedule for N measurements split over the kernels by FLOPs; 0: the variants only; the budget
and tuning time are in the table) into DIR/<model> (kept, so a second run with the same DIR reuses it), and
"Ember tuned" is `ember compile --tuning-db` on that database, taking turns with the others.
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

from ember.bench import timed_runs
from ember.models import random_feeds

MODELS = ("squeezenet", "resnet50", "mobilenet_v2", "bert")


def build_model(name: str) -> onnx.ModelProto:
    from ember.models import random_light_model
    from ember.models.blocks import bert_layer, kws_rnn, mobilenet_v2, tc_resnet8
    from ember.models.volumetric import r3d_small, unet3d_small
    from ember.models.yolo import yolov8n_backbone

    extra = {  # not in the default set
        "tc_resnet8": tc_resnet8,
        "kws_lstm": kws_rnn,
        "kws_gru": lambda: kws_rnn("GRU"),
        "yolov8n": yolov8n_backbone,
        "r3d": r3d_small,
        "unet3d": unet3d_small,
    }
    if name in extra:
        return extra[name]()
    if name == "mobilenet_v2":
        return mobilenet_v2()
    if name == "bert":
        return bert_layer()
    return random_light_model(name)


def model_gflop(model: onnx.ModelProto) -> float:
    """The model's GFLOP as its convolutions and matmuls compute them directly (2 per multiply-add; Winograd's
    fewer multiplies not counted), from ONNX's inferred shapes."""
    graph = onnx.shape_inference.infer_shapes(model, data_prop=True).graph  # data_prop: shapes through Reshape
    values = (*graph.input, *graph.value_info, *graph.output)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}
    shapes.update({t.name: list(t.dims) for t in graph.initializer})
    flop = 0
    for node in graph.node:
        out = shapes.get(node.output[0])
        if node.op_type == "Conv":  # weight [K, C / group, kh, kw]: each output reduces over C / group x kh x kw
            flop += 2 * np.prod(out) * np.prod(shapes[node.input[1]][1:])
        elif node.op_type in ("MatMul", "Gemm"):  # A [..., M, K], or [K, M] for a Gemm with transA
            transposed = any(a.name == "transA" and a.i for a in node.attribute)
            flop += 2 * np.prod(out) * shapes[node.input[0]][-2 if transposed else -1]
    return float(flop) / 1e9


def sgemm_gflops(threads: int) -> float:
    """numpy's float32 matmul (OpenBLAS) of 2048 x 2048 matrices on `threads` threads, best of 10, in GFLOP/s:
    a hand-tuned kernel's rate, the ceiling the models' rates are read against."""
    code = """
import time
import numpy as np
a = np.ones((2048, 2048), np.float32)
a @ a
best = float("inf")
for _ in range(10):
    start = time.perf_counter()
    a @ a
    best = min(best, time.perf_counter() - start)
print(2 * 2048**3 / best / 1e9)
"""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout)


def prepare(path: str, engine: str, threads: int, tuning_db: str | None):
    """(run once, compile seconds) for one engine on one model, in this process."""
    model = onnx.load(path)
    feeds = random_feeds(model, seed=1)
    if engine == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return (lambda: session.run(None, feeds)), 0.0
    import ember

    start = time.perf_counter()
    layout = "NCHW" if engine == "tvm" else None
    artifact = ember.compile(model, "host", layout=layout, tuning_db=tuning_db if engine == "tuned" else None)
    return artifact.runner(feeds), time.perf_counter() - start


def worker(path: str, engine: str, threads: int, tuning_db: str | None) -> None:
    """Prepare, say `ready <compile s>`, then for each line N on stdin time N runs and print their ms as JSON."""
    run, compile_s = prepare(path, engine, threads, tuning_db)
    for _ in range(2):
        run()
    print(f"ready {compile_s}", flush=True)
    for line in sys.stdin:
        print(json.dumps([t * 1e3 for t in timed_runs(run, int(line))]), flush=True)


def start_worker(path: str, engine: str, threads: int, tuning_db: str = "") -> tuple[subprocess.Popen, float]:
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), EMBER_SCHEDULES="0" if engine == "tvm" else "1")
    cmd = [sys.executable, __file__, "--worker", path, engine, str(threads), tuning_db]
    log = tempfile.TemporaryFile("w+")  # not a pipe: a chatty compile must not block on a full one
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    line = proc.stdout.readline().split()
    if not line or line[0] != "ready":
        proc.wait()
        log.seek(0)
        raise SystemExit(f"{engine} on {path} failed:\n{log.read()[-2000:]}")
    return proc, float(line[1])


def take_turns(workers: dict[str, subprocess.Popen], runs: int, block: int) -> dict[str, float]:
    """Median ms per engine, the workers running `block` runs each in turn until each has `runs`."""
    times: dict[str, list[float]] = {name: [] for name in workers}
    while min(len(t) for t in times.values()) < runs:
        for name, proc in workers.items():
            time.sleep(0.3)  # let the previous engine's spinning threads go idle
            proc.stdin.write(f"{block}\n")
            proc.stdin.flush()
            times[name] += json.loads(proc.stdout.readline())
    for proc in workers.values():
        proc.stdin.close()
        proc.wait()
    return {name: float(np.median(t)) for name, t in times.items()}


def tune(path: str, db: Path, trials: int, threads: int) -> float:
    """`ember tune` MODEL into `db` with `trials` measurements on `threads` threads, as the tuned build then runs
    (skipped when `db` already holds a tuning); returns the seconds it took (0 when reused)."""
    if (db / "ember_baselines.json").exists():
        return 0.0
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "ember.cli.main", "tune", path, "--trials", str(trials), "--db", str(db)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TVM_NUM_THREADS=str(threads)))
    if r.returncode != 0:
        raise SystemExit(f"ember tune on {path} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - start


def in_both_orders(path: str, engines: dict[str, str], args) -> tuple[dict[str, float], float, str]:
    """Each engine's ms as the geometric mean over two sessions, the workers started onnxruntime first, then
    Ember first (the order moved Ember/onnxruntime by up to 17% here, MobileNetV2 0.83x against 1.00x);
    also Ember's compile seconds and its ratio in each order."""
    sessions, compile_s = [], 0.0
    for order in (list(engines), list(engines)[::-1]):
        started = {e: start_worker(path, e, args.threads, engines[e]) for e in order}
        sessions.append(take_turns({e: proc for e, (proc, _) in started.items()}, args.runs, args.block))
        compile_s = max(compile_s, started["ember"][1])
    ms = {e: float(np.sqrt(sessions[0][e] * sessions[1][e])) for e in engines}
    orders = " / ".join(f"{s['ember'] / s['onnxruntime']:.2f}x" for s in sessions)
    return ms, compile_s, orders


def measure_model(path: str, name: str, gflop: float, tmp: str, args) -> list[str]:
    """One table row: Ember (and tuned) taking turns with onnxruntime, then TVM's default build on its own."""
    engines = {"onnxruntime": "", "ember": ""}
    tuning_s = 0.0
    if args.tune_trials is not None:
        db = Path(args.tune_dir or tmp) / name
        tuning_s = tune(path, db, args.tune_trials, args.threads)
        engines["tuned"] = str(db)
    ms, compile_s, orders = in_both_orders(path, engines, args)
    ort_ms = ms["onnxruntime"]
    rates = f"{gflop:.3g}: {gflop / ms['ember'] * 1e3:.0f} / {gflop / ort_ms * 1e3:.0f}"
    row = [name, _ms(ms["ember"]), f"{ms['ember'] / ort_ms:.2f}x", orders, f"{compile_s:.1f}", rates]
    if args.tune_trials is not None:
        row += [_ms(ms["tuned"]), f"{ms['tuned'] / ort_ms:.2f}x", f"{tuning_s:.0f}" if tuning_s else "reused"]
    tvm_runs = max(3, args.runs // 8)
    tvm_ms = take_turns({"tvm": start_worker(path, "tvm", args.threads)[0]}, tvm_runs, tvm_runs)["tvm"]
    return [*row, _ms(tvm_ms), f"{tvm_ms / ort_ms:.1f}x", _ms(ort_ms)]


def _ms(ms: float) -> str:
    """Three significant digits, down to microseconds (a keyword spotter takes a tenth of a millisecond)."""
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--block", type=int, default=5, help="runs per turn")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--tune-trials", type=int, help="tune each model first (0: Ember's rule variants only)")
    parser.add_argument("--tune-dir", help="where the tuning databases go (default: a temporary folder)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        path, engine, threads, db = args.worker
        worker(path, engine, int(threads), db or None)
        return
    console = Console(width=170)
    title = f"host CPU latency, {args.threads} threads, batch 1, {args.runs} runs in turns, both start orders"
    table = Table(title=title)
    cols = ["model", "Ember ms", "Ember/ort", "ort first / Ember first", "compile s", "GFLOP: GFLOP/s Ember / ort"]
    if args.tune_trials is not None:
        cols += [f"tuned ms ({args.tune_trials} trials)", "tuned/ort", "tuning s"]
    for col in (*cols, "TVM default ms", "TVM/ort", "onnxruntime ms"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            path = str(Path(tmp) / f"{name}.onnx")
            model = build_model(name)
            onnx.save(model, path)
            table.add_row(*measure_model(path, name, model_gflop(model), tmp, args))
            console.print(f"{name}: done", style="dim")
    console.print(table)
    console.print(f"numpy sgemm (2048^3, {args.threads} threads): {sgemm_gflops(args.threads):.0f} GFLOP/s")


if __name__ == "__main__":
    main()
