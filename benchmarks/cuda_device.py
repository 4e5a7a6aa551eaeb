"""CUDA bundles on a real GPU: Ember's compiled models against onnxruntime, outputs and latency.

    python benchmarks/cuda_device.py prepare DIR [--target nvidia/nvidia-h100] [--models squeezenet,...]
    python benchmarks/cuda_device.py run DIR [--runs 100] [--json FILE]        (on the GPU machine)

`prepare` compiles each model here (TVM's CUDA codegen and nvcc; no GPU needed) into a bundle, DIR/<model>/;
the first is standalone (the C++ runner, and runtime/ with TVM's runtime, its CUDA module and libcudart) and
its runner runs the others too, so the folder stays small enough to copy.
`run` needs no TVM, only numpy, onnx and onnxruntime: it rebuilds each seeded model, runs the bundle with
`runner --device cuda` (a warm-up, then `--runs` timed runs, each up to the GPU's completion) and
onnxruntime with every provider it has (CUDA when installed, and the CPU with all cores), and compares
Ember's outputs with onnxruntime's CPU outputs at verify's tolerance (rtol 1e-4, atol 1e-5 times the
output's largest magnitude above 1).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from cpu_latency import build_model
from rich.console import Console
from rich.table import Table

from ember.backends.verify import tolerance_excess
from ember.models import random_feeds

MODELS = ("squeezenet", "mobilenet_v2", "bert")


def prepare(out: Path, target: str, models: list[str]) -> None:
    import ember

    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(models):
        start = time.perf_counter()
        ember.compile(build_model(name), target).save(out / name, standalone=i == 0)
        print(f"{name}: compiled for {target} in {time.perf_counter() - start:.1f} s -> {out / name}")


def run_runner(bundle: Path, runner: Path, inputs: list[Path], outdir: Path, runs: int) -> dict:
    cmd = [str(runner / "runner"), "--device", "cuda", str(bundle / "model.so"), str(outdir), str(runs)]
    r = subprocess.run([*cmd, *map(str, inputs)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "runner:" not in r.stderr:  # the prebuilt runner does not load here: rebuild it
        print(f"{bundle.name}: prebuilt runner failed ({r.stderr.strip()[-200:]}); rebuilding", file=sys.stderr)
        subprocess.run(["make", "-s", "-B", "-C", str(runner), "runner"], check=True)
        r = subprocess.run([*cmd, *map(str, inputs)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{bundle.name}: runner failed: {r.stderr.strip()[-500:]}")
    fields = r.stdout.split()
    stats = {fields[i]: float(fields[i + 1]) for i in range(0, len(fields) - 1, 2)}
    outputs = [np.load(p) for p in sorted(outdir.glob("output*.npy"), key=lambda p: int(p.stem[6:]))]
    return {"median_ms": stats["median_ms"], "min_ms": stats["min_ms"], "outputs": outputs}


def time_onnxruntime(path: str, feeds: dict, provider: str, runs: int) -> tuple[float, list[np.ndarray]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(path, opts, providers=[provider])
    for _ in range(5):
        outputs = session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), outputs


def compare(got: list[np.ndarray], want: list[np.ndarray]) -> tuple[float, float, bool]:
    """Largest absolute error, largest error relative to the output's magnitude, and verify's pass/fail."""
    worst_abs, worst_rel, ok = 0.0, 0.0, len(got) == len(want)
    for g, w in zip(got, want):
        err, excess = tolerance_excess(g.reshape(w.shape), w)
        worst_abs = max(worst_abs, err)
        worst_rel = max(worst_rel, err / max(float(np.abs(w).max()), 1e-30))
        ok &= excess <= 0
    return worst_abs, worst_rel, ok


def gpu_name() -> str:
    try:
        r = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True
        )
        return r.stdout.strip() or "unknown GPU"
    except OSError:
        return "unknown GPU (no nvidia-smi)"


def run(folder: Path, runs: int, json_path: str | None) -> None:
    import onnxruntime as ort

    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    console = Console(width=160)
    table = Table(title=f"CUDA bundles on {gpu_name()}, batch 1, median of {runs} runs")
    for col in (
        "model",
        "Ember CUDA ms",
        *(f"ort {p[:-17]} ms" for p in providers),
        "Ember/ort",
        "max abs err",
        "max rel err",
        "verify",
    ):
        table.add_column(col, justify="right")
    results = []
    bundles = sorted(p for p in folder.iterdir() if (p / "metadata.json").exists())
    standalone = next(b for b in bundles if (b / "runtime").is_dir())
    for bundle in bundles:
        meta = json.loads((bundle / "metadata.json").read_text())
        model = build_model(bundle.name)
        feeds = random_feeds(model)
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "model.onnx")
            onnx.save(model, path)
            inputs = []
            for i, spec in enumerate(meta["inputs"]):
                inputs.append(Path(tmp) / f"input{i}.npy")
                np.save(inputs[-1], feeds[spec["name"]])
            try:
                ember_run = run_runner(bundle, standalone, inputs, Path(tmp) / "out", runs)
            except (RuntimeError, subprocess.SubprocessError) as e:
                results.append({"model": bundle.name, "error": str(e)})
                table.add_row(bundle.name, f"failed: {str(e)[-120:]}")
                continue
            ort_ms, want = {}, None
            for provider in providers:
                ort_ms[provider], outputs = time_onnxruntime(path, feeds, provider, runs)
                if provider == "CPUExecutionProvider":
                    want = outputs
        err_abs, err_rel, ok = compare(ember_run["outputs"], want)
        best_ort = min(ort_ms.values())
        row = {
            "model": bundle.name,
            "ember_ms": ember_run["median_ms"],
            "ember_min_ms": ember_run["min_ms"],
            "onnxruntime_ms": ort_ms,
            "max_abs_err": err_abs,
            "max_rel_err": err_rel,
            "verify": ok,
        }
        results.append(row)
        table.add_row(
            bundle.name,
            f"{ember_run['median_ms']:.3f}",
            *(f"{ort_ms[p]:.3f}" for p in providers),
            f"{ember_run['median_ms'] / best_ort:.2f}x",
            f"{err_abs:.2e}",
            f"{err_rel:.2e}",
            "pass" if ok else "FAIL",
        )
    console.print(table)
    console.print("Ember/ort is against onnxruntime's fastest provider here.")
    if json_path:
        Path(json_path).write_text(
            json.dumps({"gpu": gpu_name(), "providers": providers, "results": results}, indent=2)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="compile standalone CUDA bundles here")
    p.add_argument("dir")
    p.add_argument("--target", default="nvidia/nvidia-h100")
    p.add_argument("--models", default=",".join(MODELS))
    r = sub.add_parser("run", help="run them on the GPU machine")
    r.add_argument("dir")
    r.add_argument("--runs", type=int, default=100)
    r.add_argument("--json")
    args = parser.parse_args()
    if args.cmd == "prepare":
        prepare(Path(args.dir), args.target, args.models.split(","))
    else:
        run(Path(args.dir), args.runs, args.json)


if __name__ == "__main__":
    main()
