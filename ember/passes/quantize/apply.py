"""Post-training int8 quantization of an optimized fp32 graph, end to end: calibrate, rewrite, report."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ember.errors import EmberError
from ember.ir.graph import Graph, Value
from ember.passes.dce import eliminate_dead_code
from ember.passes.quantize.calibrate import METHODS, calibrate, load_samples
from ember.passes.quantize.report import (
    QuantReport,
    constant_bytes,
    evaluate,
    float_ops,
    low_sqnr_warnings,
)
from ember.passes.quantize.rewrite import (
    candidates,
    fold_output_dequantize,
    quantize_layers,
    remove_requantize_pairs,
    sink_dequantize,
    taps_for,
)
from ember.passes.quantize.scheme import scheme_for_target

log = logging.getLogger("ember.quantize")
MODES = ("int8",)
Data = str | os.PathLike | Iterable[Mapping[str, np.ndarray]]


def clone(graph: Graph) -> Graph:
    """A structural copy of `graph` with the same names (constant arrays are shared, not copied)."""
    out = Graph(graph.name)
    new: dict[int, Value] = {}
    for v in graph.inputs:
        new[id(v)] = out.add_input(v.name, v.shape, v.dtype)
    for v in graph.constants:
        new[id(v)] = out.add_constant(v.const, v.name, v.dtype)
    for node in graph.nodes:
        ins = [None if v is None else new[id(v)] for v in node.inputs]
        copy = out.add_node(node.op, ins, dict(node.attrs), node.name, [o.name for o in node.outputs])
        new.update({id(a): b for a, b in zip(node.outputs, copy.outputs)})
    out.outputs = [new[id(v)] for v in graph.outputs]
    return out


def _check_skip(graph: Graph, skip: Sequence[str]) -> None:
    known = {n.name for n in graph.nodes} | {n.op for n in graph.nodes}
    unknown = [s for s in skip if s not in known]
    if unknown:
        layers = ", ".join(n.name for n in candidates(graph)[:8])
        raise EmberError(
            f"--skip-ops names '{unknown[0]}', which is neither a node nor an op of the optimized graph",
            hint=f"layers: {layers}",
        )


def quantize_graph(
    graph: Graph,
    calibration: Data | None,
    *,
    arch: str,
    features: Sequence[str] | str = (),
    mode: str = "int8",
    method: str = "percentile",
    per_channel: bool = True,
    skip_ops: Sequence[str] = (),
    evaluation: Data | None = None,
    percentile: float = 99.99,
    progress: bool = True,
) -> QuantReport:
    """Quantize `graph` in place for a target (`arch`, its `features` such as mattr) from calibration samples, and
    report the accuracy kept on the `evaluation` samples (the calibration ones unless given)."""
    if mode not in MODES:
        raise EmberError(f"unknown quantization '{mode}'", hint=f"use one of {', '.join(MODES)}")
    if method not in METHODS:
        raise EmberError(f"unknown calibration method '{method}'", hint=f"use one of {', '.join(METHODS)}")
    if calibration is None:
        raise EmberError("int8 quantization needs calibration data", hint="pass calibration= or --calibration DATA")
    skip_ops = tuple(skip_ops)
    _check_skip(graph, skip_ops)
    scheme = scheme_for_target(arch, features)
    samples = load_samples(calibration, graph)
    layers = candidates(graph, skip_ops)
    ranges = calibrate(graph, samples, taps_for(layers), method, percentile, progress)
    fp32 = clone(graph)
    done = quantize_layers(graph, ranges, scheme, per_channel, skip_ops)
    sink_dequantize(graph)
    remove_requantize_pairs(graph)
    fold_output_dequantize(graph, done)
    eliminate_dead_code(graph)
    checks = samples if evaluation is None else load_samples(evaluation, fp32)
    layer_db, output_db, top1 = evaluate(fp32, graph, done, checks)
    rows = [{"name": d.name, "op": d.op, "sqnr_db": layer_db[d.name], "float_epilogue": d.float_epilogue} for d in done]
    report = QuantReport(
        scheme={"arch": arch, "activations": scheme.activation, "weights": "i8", "weight_max": scheme.weight_max},
        method=method,
        per_channel=per_channel,
        samples=len(checks),
        layers=rows,
        outputs=output_db,
        top1_agreement=top1,
        weight_bytes={"fp32": constant_bytes(fp32), "int8": constant_bytes(graph)},
        float_ops=float_ops(graph, skip_ops),
        warnings=low_sqnr_warnings(rows),
    )
    for w in report.warnings:
        log.warning(w)
    return report


def target_features(target: Any) -> list[str]:
    """A TVM target's mattr and mcpu as plain strings, for scheme_for_target, with the VNNI features an mcpu
    implies (Cascade Lake's avx512vnni, Alder Lake's avxvnni) spelled out."""
    from tvm.target.codegen import llvm_cpu_has_features

    attrs = dict(target.attrs)
    named = [str(f) for f in attrs.get("mattr", ()) or ()] + ([str(attrs["mcpu"])] if attrs.get("mcpu") else [])
    if target.kind.name != "llvm" or not attrs.get("mcpu"):
        return named
    return named + [f"+{f}" for f in ("avx512vnni", "avxvnni") if llvm_cpu_has_features(f, target)]
