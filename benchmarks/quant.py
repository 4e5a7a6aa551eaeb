"""Int8 vs fp32, Ember vs onnxruntime: latency, accuracy kept, weight bytes; one table per run.

    python benchmarks/quant.py [--threads 2] [--runs 20] [--models cnn,mobilenet_v2,resnet50] [--size 224]

Models: a small CNN trained for 300 steps on a learnable synthetic task (tests/passes/quant_models.py; its
top-1 agreement is meaningful), MobileNetV2 and ResNet-50 (seeded random weights, inputs ~N(0, 1)).
Ember int8 is `ember.compile(model, quantize="int8", calibration=...)`; onnxruntime int8 is the QDQ model
`onnxruntime.quantization.quantize_static` writes, after its `quant_pre_process` (which folds batch norms into
the convs), from the same calibration samples (per-channel int8 weights,
uint8 activations), run with onnxruntime's default graph optimizations (QDQ fused into QLinearConv).

Ember's two builds, saved as bundles, run in a worker process with TVM's threads pinned to cores, as a deployed
artifact runs; onnxruntime's two sessions run in this process, where pinning would share one core between
onnxruntime's work on the calling thread and a TVM worker (SqueezeNet's onnxruntime time tripled). Unpinned,
MobileNetV2's Ember runs took 1.2-1.3x as long (fp32 7.9-8.3 ms against 6.4-6.8, int8 4.9-5.2 against 3.9): a
thread that moves cores leaves the activations it wrote in the other core's cache. The runtimes take turns,
`--block` runs at a time, each turn after one untimed run, on the same inputs; the table gives medians. A model
faster than 0.5 s / `--runs` a run gets more runs and larger blocks, about 0.5 s of runs for each runtime (the
trained CNN: tens of thousands). onnxruntime's workers do not spin between runs
(session.intra_op.allow_spinning=0): spinning workers of a session between its turns starved TVM's pool on 2
cores (the trained CNN's Ember fp32 run measured 12 ms instead of 0.04 ms); it costs onnxruntime about 2x on
that 0.05 ms model. On a shared small machine the ratios are the numbers to read. Accuracy: top-1 agreement of
int8 with the same runtime's fp32 over the evaluation samples and the output SQNR in dB (10 log10 |fp32|^2 /
|fp32 - int8|^2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter

from ember.bench import timed_runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.passes.quant_models: the trained CNN

MODELS = ("cnn", "mobilenet_v2", "resnet50")


def build(name: str, size: int) -> tuple[onnx.ModelProto, list[dict], list[dict]]:
    """(model, calibration samples, evaluation samples)."""
    if name == "cnn":
        from tests.passes.quant_models import cnn_onnx, samples

        return cnn_onnx(), samples(128, seed=5), samples(300, seed=9)
    from ember.models import random_light_model
    from ember.models.blocks import mobilenet_v2

    if name == "mobilenet_v2":
        model = mobilenet_v2(size=size)
    else:  # opset 8 as stored; opset 13 gives DequantizeLinear the axis per-channel QDQ needs
        model = onnx.version_converter.convert_version(random_light_model("resnet50"), 13)
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(11)
    draw = lambda n: [{inp.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]  # noqa: E731
    return model, draw(16), draw(24)


def ort_int8(model: onnx.ModelProto, calibration: list[dict], folder: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            return next(self.items, None)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw, src, dst = folder / "raw.onnx", folder / "fp32.onnx", folder / "int8.onnx"
    onnx.save(model, raw)
    quant_pre_process(str(raw), str(src))  # the documented first step: folds BatchNormalization into the convs
    quantize_static(
        str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return onnx.load(dst)


def ort_session(model: onnx.ModelProto, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def weight_bytes_onnx(model: onnx.ModelProto) -> int:
    return sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


def weight_bytes_ember(artifact) -> int:
    return sum(v.const.nbytes for v in artifact.graph.constants if v.const.size > 1)


def accuracy(ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[float, float]:
    """(top-1 agreement, SQNR dB) of `got` against `ref`, output by output."""
    agree = np.mean([int(np.argmax(r) == np.argmax(g)) for r, g in zip(ref, got)])
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in ref)
    noise = sum(float(np.sum((r.astype(np.float64) - g) ** 2)) for r, g in zip(ref, got))
    return float(agree), 10 * np.log10(signal / max(noise, 1e-30))


def scaled_runs(runners: list, runs: int, block: int, seconds: float = 0.5) -> tuple[int, int]:
    """(runs, block) raised for a model faster than `seconds` / runs a run, so each runtime is timed for about
    `seconds` in 20 turns: 20 runs of a 10 us model are below the timer's and the thread pools' noise."""
    slowest = 0.0
    for run in runners:
        run()
        start = time.perf_counter()
        run()
        slowest = max(slowest, time.perf_counter() - start)
    wanted = min(int(seconds / max(slowest, 1e-7)), 50_000)
    if wanted <= runs:
        return runs, block
    return wanted, max(block, wanted // 20)


def timed_turn(run, block: int) -> list[float]:
    """Seconds of each of `block` runs, after one untimed run (the previous runtime's threads settle)."""
    run()
    return timed_runs(run, block)


def alternate(ember: subprocess.Popen, runners: list, runs: int, block: int) -> list[list[float]]:
    """Seconds per run of Ember fp32 and int8 (the `ember` worker) and each of `runners`, taking turns `block`
    timed runs at a time."""
    times: list[list[float]] = [[] for _ in range(2 + len(runners))]
    while len(times[0]) < runs:
        ember.stdin.write(f"{block}\n")
        ember.stdin.flush()
        for out, got in zip(times, json.loads(ember.stdout.readline())):
            out += got
        for run, out in zip(runners, times[2:]):
            out += timed_turn(run, block)
    ember.stdin.close()
    ember.wait()
    return times


def ember_worker(folder: str) -> None:
    """Load the fp32 and int8 bundles `run_model` saved in `folder`, say `ready`, then for each line N on stdin
    time a turn of N runs of each on the saved feeds and print their seconds as JSON."""
    import ember

    feeds = dict(np.load(Path(folder) / "feeds.npz"))
    runners = [ember.load(Path(folder) / b).runner(feeds) for b in ("fp32", "int8")]
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps([timed_turn(run, int(line)) for run in runners]), flush=True)


def start_ember_worker(builds: list, feeds: dict, folder: Path, threads: int) -> subprocess.Popen:
    """A worker timing the fp32 and int8 `builds` (saved to `folder`, not compiled again), its TVM threads pinned
    (TVM's default), once it is ready."""
    for build_, sub in zip(builds, ("fp32", "int8")):
        build_.save(folder / sub)
    np.savez(folder / "feeds.npz", **feeds)
    env = {k: v for k, v in os.environ.items() if k != "TVM_BIND_THREADS"} | {"TVM_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", str(folder)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.strip() == "ready":
            return proc
    raise SystemExit(f"the Ember worker in {folder} failed (exit {proc.wait()})")


def run_model(name: str, args) -> dict:
    import ember

    model, calib, evals = build(name, args.size)
    fp32 = ember.compile(model, "host")
    quiet = name != "cnn"  # seeded random weights: low per-layer SQNR says nothing, so no warning per layer
    logging.getLogger("ember.quantize").setLevel(logging.ERROR if quiet else logging.WARNING)
    int8 = ember.compile(model, "host", quantize="int8", calibration=calib)
    with tempfile.TemporaryDirectory() as tmp:
        ort_q_model = ort_int8(model, calib, Path(tmp))
    ort_f, ort_q = ort_session(model, args.threads), ort_session(ort_q_model, args.threads)
    outs = {
        "ember_fp32": [next(iter(fp32.run(s).values())) for s in evals],
        "ember_int8": [next(iter(int8.run(s).values())) for s in evals],
        "ort_fp32": [ort_f.run(None, s)[0] for s in evals],
        "ort_int8": [ort_q.run(None, s)[0] for s in evals],
    }
    feeds = evals[0]
    ort_runners = [lambda: ort_f.run(None, feeds), lambda: ort_q.run(None, feeds)]
    runs, block = scaled_runs([fp32.runner(feeds), int8.runner(feeds), *ort_runners], args.runs, args.block)
    with tempfile.TemporaryDirectory() as tmp:
        worker = start_ember_worker([fp32, int8], feeds, Path(tmp), args.threads)
        ms = [float(np.median(t)) * 1e3 for t in alternate(worker, ort_runners, runs, block)]
    return {
        "ms": dict(zip(("ember_fp32", "ember_int8", "ort_fp32", "ort_int8"), ms)),
        "ember_acc": accuracy(outs["ember_fp32"], outs["ember_int8"]),
        "ort_acc": accuracy(outs["ort_fp32"], outs["ort_int8"]),
        "bytes": (weight_bytes_ember(fp32), weight_bytes_ember(int8), weight_bytes_onnx(ort_q_model)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20, help="at least; fast models get more (see above)")
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--size", type=int, default=224, help="MobileNetV2 input size")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--worker", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return ember_worker(args.worker)

    from rich.console import Console
    from rich.table import Table

    from ember.bench import set_threads

    set_threads(args.threads)
    table = Table(title=f"int8 vs fp32, {args.threads} threads, median ms of >= {args.runs} runs (alternating)")
    for col in (
        "model", "Ember fp32", "Ember int8", "ORT fp32", "ORT int8", "int8/fp32 (Ember)", "Ember int8 / ORT int8",
        "top-1 agree Ember | ORT", "SQNR dB Ember | ORT", "weights int8/fp32 (Ember | ORT)",
    ):  # fmt: skip
        table.add_column(col, justify="right")
    for name in args.models.split(","):
        r = run_model(name, args)
        ms, (ea, es), (oa, os_), (bf, bq, bo) = r["ms"], r["ember_acc"], r["ort_acc"], r["bytes"]
        table.add_row(
            name, *(f"{ms[k]:.3g}" for k in ("ember_fp32", "ember_int8", "ort_fp32", "ort_int8")),
            f"{ms['ember_int8'] / ms['ember_fp32']:.2f}x", f"{ms['ember_int8'] / ms['ort_int8']:.2f}x",
            f"{ea:.1%} | {oa:.1%}", f"{es:.1f} | {os_:.1f}", f"{bq / bf:.3f} | {bo / bf:.3f}",
        )  # fmt: skip
        Console(width=220).print(table)


if __name__ == "__main__":
    main()
