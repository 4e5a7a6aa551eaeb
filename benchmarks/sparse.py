"""Sparse vs dense latency: a transformer FFN (768x3072 then 3072x768) and a 1x1-conv CNN, pruned to
50/70/90/95% (unstructured and in blocks), batch 1 and 16, Ember sparse vs Ember dense vs onnxruntime dense.

    python benchmarks/sparse.py [--threads 1] [--runs 30] [--block 4x4]

Ember sparse is compiled with --sparse-threshold 1 so every pruned layer runs its BSR kernel, which
measures where sparse stops winning; the speedup column is Ember dense / Ember sparse. Ember dense is
the unpruned model (a dense kernel's time does not depend on the zeros). The three are timed alternately
in one process, median of `--runs`; the last columns are stored weight bytes vs dense and the largest
error against the pruned model run densely by the interpreter (relative to its largest output).

Ember is timed through `artifact.runner` (inputs converted to TVM tensors once), not `artifact.run`: run's
per-call checks and numpy <-> TVM conversion cost the same for sparse and dense (about 75 us back to back, 0.1-0.25 ms
alternating with the dense model, which evicts the caches, on this machine), which is not what the kernels change and
would cap the speedup of a sub-millisecond model. onnxruntime keeps `InferenceSession.run` with numpy
inputs, its ordinary entry point (a few us of binding per call).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SPARSITIES = (0.5, 0.7, 0.9, 0.95)


def _model(name: str, nodes: list, inputs: list, outputs: list, weights: dict) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(a, n) for n, a in weights.items()]
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ffn(batch: int, d: int = 768, h: int = 3072, seed: int = 0) -> onnx.ModelProto:
    """x [batch, d] -> MatMul d x h -> +b -> Relu -> MatMul h x d -> +b."""
    rng = np.random.default_rng(seed)
    weights = {
        "w1": (rng.standard_normal((d, h)) / np.sqrt(d)).astype(np.float32),
        "b1": (rng.standard_normal(h) * 0.1).astype(np.float32),
        "w2": (rng.standard_normal((h, d)) / np.sqrt(h)).astype(np.float32),
        "b2": (rng.standard_normal(d) * 0.1).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["y0"]),
        helper.make_node("Add", ["y0", "b2"], ["y"]),
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, d]) for n in ("x", "y")]
    return _model("ffn", nodes, io[:1], io[1:], weights)


def cnn(batch: int, c: int = 256, wide: int = 1024, hw: int = 7, seed: int = 0) -> onnx.ModelProto:
    """Two bottleneck-style pairs of 1x1 convs (c -> wide -> c, ReLU) on a [batch, c, hw, hw] map."""
    rng = np.random.default_rng(seed)
    weights, nodes, x = {}, [], "x"
    for i, (cin, cout) in enumerate(((c, wide), (wide, c), (c, wide), (wide, c))):
        weights[f"w{i}"] = (rng.standard_normal((cout, cin, 1, 1)) / np.sqrt(cin)).astype(np.float32)
        weights[f"b{i}"] = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
    nodes[-1] = helper.make_node("Relu", ["c3"], ["y"])
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, c, hw, hw]) for n in ("x", "y")]
    return _model("cnn1x1", nodes, io[:1], io[1:], weights)


def time_alternating(fns: list, runs: int) -> list[float]:
    """Median ms of each function, calling them in turn so load changes hit all alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [float(np.median(t) * 1e3) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--block", default="4x4", help="block pattern for the block rows (RxC)")
    parser.add_argument("--models", default="ffn,cnn")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    import ember
    from ember.ir.interpreter import interpret

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    runs = f"median of {args.runs} alternating runs (CNN: a quarter of them)"
    print(f"host CPU, {args.threads} threads, {runs}; a shared machine is noisy")
    cols = "model | batch | pattern | sparsity | sparse ms | dense ms | ort ms | speedup | bytes/dense | rel err"
    print(f"| {cols} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for batch in (1, 16):
            model = {"ffn": ffn, "cnn": cnn}[name](batch)
            shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
            x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
            dense = ember.compile(model, "host")
            sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            for pattern in ("unstructured", f"block:{args.block}"):
                for sparsity in SPARSITIES:
                    options = {"pattern": pattern, "threshold": 1.0}
                    sparse = ember.compile(model, "host", sparsity=sparsity, sparsity_options=options)
                    ref = ember.compile(
                        model, "host", sparsity=sparsity, sparsity_options=options, sparse_lowering=False
                    )
                    want = interpret(ref.graph, {"x": x})["y"]
                    got = sparse.run({"x": x})["y"]
                    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
                    t_sparse, t_dense, t_ort = time_alternating(
                        [sparse.runner({"x": x}), dense.runner({"x": x}), lambda: sess.run(None, {"x": x})],
                        args.runs if name == "ffn" else max(3, args.runs // 4),
                    )
                    rows = sparse.sparsity_report
                    ratio = sum(r.bytes_stored for r in rows) / sum(r.bytes_dense for r in rows)
                    print(
                        f"| {name} | {batch} | {pattern} | {sparsity:.0%} | {t_sparse:.3f} | {t_dense:.3f} | "
                        f"{t_ort:.3f} | {t_dense / t_sparse:.2f}x | {ratio:.3f} | {err:.1e} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
