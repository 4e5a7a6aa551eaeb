"""The accuracy report of a quantized graph against its fp32 original: per-layer and output SQNR, top-1
agreement, weight bytes, and which ops stayed float."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.ir.graph import Graph
from ember.passes.quantize.calibrate import Sample, walk
from ember.passes.quantize.rewrite import Layer

INTEGER_OPS = ("quantize", "dequantize", "qconv2d", "qdense")
LOW_SQNR_DB = 15.0


class _Power:
    """Signal and noise power, accumulated over samples."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        ref = ref.astype(np.float64)
        self.signal += float(np.sum(ref * ref))
        self.noise += float(np.sum((ref - got.astype(np.float64)) ** 2))

    @property
    def db(self) -> float:
        if self.noise == 0:
            return math.inf
        return 10 * math.log10(max(self.signal, 1e-300) / self.noise)


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - got)^2); inf when they are equal."""
    p = _Power()
    p.add(ref, got)
    return p.db


def dequantized(arr: np.ndarray, layer: Layer) -> np.ndarray:
    p = layer.probe_qparams
    if p is None:
        return arr
    return (arr.astype(np.float32) - np.float32(p.zero_point)) * np.float32(p.scale)


@dataclass
class QuantReport:
    """What quantization did and what it cost in accuracy; `to_json()` is quant_report.json."""

    scheme: dict[str, Any]
    method: str
    per_channel: bool
    samples: int
    layers: list[dict[str, Any]]
    outputs: dict[str, float]
    top1_agreement: float | None
    weight_bytes: dict[str, int]
    float_ops: list[dict[str, str]]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def clean(x):
            return None if isinstance(x, float) and math.isinf(x) else x

        data = dict(self.__dict__)
        data["layers"] = [{k: clean(v) for k, v in layer.items()} for layer in self.layers]
        data["outputs"] = {k: clean(v) for k, v in self.outputs.items()}
        data["weight_bytes"]["ratio"] = round(self.weight_bytes["int8"] / max(self.weight_bytes["fp32"], 1), 4)
        return data


def constant_bytes(graph: Graph) -> int:
    return sum(int(v.const.nbytes) for v in graph.constants)


def _run(graph: Graph, sample: Sample, want: set[int]) -> dict[int, np.ndarray]:
    """The arrays of the wanted values (by id) and of the graph's outputs, from one run."""
    want = want | {id(v) for v in graph.outputs}
    got = {id(v): np.asarray(sample[v.name]) for v in graph.inputs if id(v) in want}
    got.update({id(v): v.const for v in graph.outputs if v.is_const})
    walk(graph, sample, lambda n, i, o: got.update({id(v): a for v, a in zip(n.outputs, o) if id(v) in want}))
    return got


def evaluate(
    fp32: Graph, quantized: Graph, layers: Sequence[Layer], samples: Sequence[Sample]
) -> tuple[dict[str, float], dict[str, float], float | None]:
    """Per-layer SQNR, per-output SQNR and top-1 agreement of the first output's last axis, over `samples`."""
    layer_power = {layer.name: _Power() for layer in layers}
    out_power = [_Power() for _ in fp32.outputs]
    ref_values = {layer.name: fp32.value(layer.fp32_output) for layer in layers}
    agree, rows = 0, 0
    for sample in samples:
        ref = _run(fp32, sample, {id(v) for v in ref_values.values()})
        got = _run(quantized, sample, {id(layer.probe) for layer in layers})
        for layer in layers:
            layer_power[layer.name].add(ref[id(ref_values[layer.name])], dequantized(got[id(layer.probe)], layer))
        want = [ref[id(v)] for v in fp32.outputs]
        have = [got[id(v)] for v in quantized.outputs]
        for power, a, b in zip(out_power, want, have):
            power.add(a, b)
        if want[0].ndim >= 1 and want[0].shape[-1] > 1:
            agree += int(np.sum(want[0].argmax(-1) == have[0].argmax(-1)))
            rows += want[0].size // want[0].shape[-1]
    top1 = agree / rows if rows else None
    outputs = {v.name: p.db for v, p in zip(fp32.outputs, out_power)}
    return {k: p.db for k, p in layer_power.items()}, outputs, top1


def float_ops(graph: Graph, skipped: Sequence[str]) -> list[dict[str, str]]:
    """Compute nodes that run in float in the quantized graph (and why, for layers that could have been int8)."""
    out = []
    for node in graph.nodes:
        if node.op in INTEGER_OPS or not node.output.dtype.startswith("f"):
            continue  # int8 data movement and max pooling run on the integers
        why = "skipped (--skip-ops)" if node.name in skipped or node.op in skipped else "no integer kernel"
        out.append({"name": node.name, "op": node.op, "reason": why})
    return out


def low_sqnr_warnings(layers: Sequence[dict[str, Any]], threshold: float = LOW_SQNR_DB) -> list[str]:
    return [
        f"layer '{layer['name']}' keeps only {layer['sqnr_db']:.1f} dB SQNR (below {threshold:g} dB); "
        f"keep it in float with --skip-ops {layer['name']}"
        for layer in layers
        if layer["sqnr_db"] < threshold
    ]


def print_report(report: QuantReport, console=None) -> None:
    """A rich table of the report on stderr: each layer's SQNR, then outputs, top-1, weights, float ops (the
    low-SQNR warnings went to the log when the report was made)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(stderr=True)
    table = Table(title=f"int8 quantization ({report.method}, {report.samples} samples)", title_justify="left")
    for col in ("layer", "op", "SQNR dB", "float epilogue"):
        table.add_column(col, justify="right" if col == "SQNR dB" else "left")
    for layer in report.layers:
        db = layer["sqnr_db"]
        text = "exact" if math.isinf(db) else f"{db:.1f}"
        table.add_row(
            layer["name"],
            layer["op"],
            text if db >= LOW_SQNR_DB else f"[red]{text}[/red]",
            ", ".join(layer["float_epilogue"]) or "-",
        )
    console.print(table)
    for name, db in report.outputs.items():
        console.print(f"output {name}: SQNR {db:.1f} dB")
    if report.top1_agreement is not None:
        console.print(f"top-1 agreement with fp32: {report.top1_agreement * 100:.2f}%")
    wb = report.weight_bytes
    console.print(f"weights: {wb['fp32']:,} B fp32 -> {wb['int8']:,} B int8 ({wb['int8'] / max(wb['fp32'], 1):.3f}x)")
    if report.float_ops:
        names = ", ".join(f"{o['name']} ({o['op']})" for o in report.float_ops[:12])
        more = f" and {len(report.float_ops) - 12} more" if len(report.float_ops) > 12 else ""
        console.print(f"stayed float: {names}{more}")
