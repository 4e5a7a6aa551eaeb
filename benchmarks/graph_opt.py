"""Graph optimization next to onnxruntime, onnxslim and onnx-simplifier: node counts, folds and fusions, in one run.

    python benchmarks/graph_opt.py [--models squeezenet,bert_layer] [--no-compile] [--ops]

Every tool gets a copy of the same ModelProto (light/ models with seeded random weights). Ember's columns come
from the -O2 pipeline's pass records: "folded" is what import folding removed (ONNX nodes - imported nodes, 0
where the import expands more than it folds, as for opset-9 Softmax) plus what fold-constants removed; "fused"
is what fold-scale, matmul-to-dense and every pass named fuse-* or recognize-* removed. onnxruntime runs
ORT_ENABLE_EXTENDED on the CPU provider and is counted in the graph it saves (its contrib ops such as FusedConv
or Attention count one node each). The simplifiers come with the `bench` extra (pip install -e ".[bench]"); a
column whose tool is not installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import onnx
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

import ember
from ember.frontends.onnx import load
from ember.ir.graph import Graph
from ember.models import LIGHT_MODELS, random_light_model
from ember.models.blocks import bert_layer, mobile_block, mobilenet_v2, transformer_block
from ember.passes.manager import PassManager

MODELS: dict[str, Callable[[], onnx.ModelProto]] = {name: partial(random_light_model, name) for name in LIGHT_MODELS}
MODELS |= {
    "mobile_block": mobile_block,
    "transformer_block": transformer_block,
    "mobilenet_v2": mobilenet_v2,
    "bert_layer": bert_layer,
    "bert_layer_decomposed_ln": partial(bert_layer, fused_layer_norm=False),
}


def is_fold(name: str) -> bool:
    return name == "fold-constants"


def is_fusion(name: str) -> bool:
    return name.startswith(("fuse-", "recognize")) or name in ("fold-scale", "matmul-to-dense")


def ort_extended(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph onnxruntime runs after its basic and extended (fusing) graph optimizations."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return onnx.load(opts.optimized_model_filepath)


def onnxslim_tool() -> Callable[[onnx.ModelProto], onnx.ModelProto] | None:
    try:
        import onnxslim
    except ImportError:
        return None
    return onnxslim.slim


def onnxsim_tool() -> Callable[[onnx.ModelProto], onnx.ModelProto] | None:
    try:
        import onnxsim
    except ImportError:
        return None
    return lambda model: onnxsim.simplify(model)[0]


def copy_of(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def declare_output_shapes(model: onnx.ModelProto, graph: Graph) -> None:
    """Write the shapes Ember inferred into graph outputs declared without one: the onnx checker, and so
    onnxsim, requires them (onnxruntime and Ember do not). Changes no node."""
    for out, value in zip(model.graph.output, graph.outputs):
        if not out.type.tensor_type.HasField("shape"):
            elem = out.type.tensor_type.elem_type
            out.type.CopyFrom(onnx.helper.make_tensor_type_proto(elem, list(value.shape)))


@dataclass
class Row:
    """One model's numbers; a tool's count is None when the tool is missing or failed on the model."""

    name: str
    onnx_nodes: int
    imported: int
    optimized: int
    folded: int
    fused: int
    opt_ms: float
    compile_s: float | None
    others: dict[str, int | None]
    ember_ops: dict[str, int]
    ort_ops: dict[str, int]
    failures: dict[str, str] = field(default_factory=dict)


def run_tools(model: onnx.ModelProto, tools: dict[str, Callable]) -> tuple[dict[str, int | None], dict[str, str]]:
    """Node counts after each simplifier, None (and why, in the second dict) where one failed."""
    counts: dict[str, int | None] = {}
    failures = {}
    for tool, fn in tools.items():
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                counts[tool] = len(fn(copy_of(model)).graph.node)
        except Exception as e:  # a simplifier's failure on one model is a finding, not the end of the run
            counts[tool], failures[tool] = None, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:100]}"
    return counts, failures


def measure(name: str, model: onnx.ModelProto, tools: dict[str, Callable], compile_: bool) -> Row:
    graph = load(copy_of(model))
    declare_output_shapes(model, graph)
    imported = len(graph.nodes)
    pm = PassManager.from_spec(2)
    start = time.perf_counter()
    pm.run(graph)
    opt_ms = (time.perf_counter() - start) * 1e3
    compile_s = None
    if compile_:
        start = time.perf_counter()
        ember.compile(copy_of(model), "host")
        compile_s = time.perf_counter() - start
    removed = lambda keep: sum(r.nodes_before - r.nodes_after for r in pm.records if keep(r.name))
    ort_graph = ort_extended(copy_of(model)).graph
    counts, failures = run_tools(model, tools)
    return Row(
        name,
        len(model.graph.node),
        imported,
        len(graph.nodes),
        max(0, len(model.graph.node) - imported) + removed(is_fold),
        removed(is_fusion),
        opt_ms,
        compile_s,
        {"ort": len(ort_graph.node)} | counts,
        graph.op_counts(),
        dict(Counter(n.op_type for n in ort_graph.node)),
        failures,
    )


def verdict(row: Row) -> str:
    return "  ".join(f"{t} {'✓' if row.optimized <= n else '✗'}" for t, n in row.others.items() if n is not None)


def table(rows: list[Row], tools: list[str], with_compile: bool) -> Table:
    t = Table(title="graph optimization: node counts after each tool (Ember at -O2), batch 1")
    cols = ["model", "onnx", "import", "-O2", "folded", "fused", "-O2 ms"] + (["compile s"] if with_compile else [])
    for col in cols + ["ort ext", *tools, "ember <="]:
        left = col in ("model", "ember <=")
        t.add_column(col, justify="left" if left else "right", no_wrap=left)
    for r in rows:
        cells = [r.name, r.onnx_nodes, r.imported, r.optimized, r.folded, r.fused, f"{r.opt_ms:.1f}"]
        cells += [f"{r.compile_s:.1f}"] if with_compile else []
        cells += ["failed" if r.others[k] is None else r.others[k] for k in ["ort", *tools]]
        t.add_row(*map(str, cells), verdict(r))
    return t


def summary(rows: list[Row], labels: dict[str, str]) -> str:
    parts = []
    for tool, label in labels.items():
        counted = [r for r in rows if r.others.get(tool) is not None]
        wins = sum(r.optimized <= r.others[tool] for r in counted)
        parts.append(f"<= {label} on {wins}/{len(counted)} models")
    return "Ember " + ", ".join(parts)


def op_diff(row: Row) -> str:
    """Op kinds of both graphs, for a model where Ember keeps more nodes than onnxruntime."""
    fmt = lambda ops: ", ".join(f"{op} {n}" for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))
    head = f"{row.name}: Ember {row.optimized} nodes, ORT {row.others['ort']}"
    return f"{head}\n  ember: {fmt(row.ember_ops)}\n  ort:   {fmt(row.ort_ops)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    parser.add_argument("--no-compile", action="store_true", help="skip the full host compile (the slow column)")
    parser.add_argument("--ops", action="store_true", help="list op kinds where Ember keeps more nodes than ORT")
    args = parser.parse_args()
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(f"unknown model {', '.join(sorted(unknown))}; choose from {', '.join(MODELS)}")
    console = Console(width=160)
    found = {"onnxslim": onnxslim_tool(), "onnxsim": onnxsim_tool()}
    tools = {name: fn for name, fn in found.items() if fn is not None}
    rows = []
    for name in args.models.split(","):
        start = time.perf_counter()
        rows.append(measure(name, MODELS[name](), tools, not args.no_compile))
        console.print(f"{name}: done in {time.perf_counter() - start:.1f} s", style="dim")
    console.print(table(rows, list(tools), not args.no_compile))
    for name in sorted(set(found) - set(tools)):
        note = f"{name} is not installed, its column is skipped: pip install -e '.[bench]'"
        console.print(note, style="yellow", markup=False)
    for row in rows:
        for tool, why in row.failures.items():
            console.print(f"{tool} failed on {row.name}: {why}", style="yellow", markup=False, highlight=False)
    console.print(summary(rows, {"ort": "ORT extended"} | {t: t for t in tools}))
    if args.ops:
        for row in rows:
            if row.optimized > row.others["ort"]:
                console.print(op_diff(row), markup=False, highlight=False)


if __name__ == "__main__":
    main()
