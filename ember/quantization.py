"""What ember.compile does for `quantize="int8"`: quantize the optimized graph for the target's integer scheme
and keep the report for the bundle (quant_report.json)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ember.ir.graph import Graph

REPORT = "quant_report.json"


def quantize_for_target(
    graph: Graph,
    spec: Any,
    quantize: str | None,
    calibration: Any,
    method: str,
    per_channel: bool,
    skip_ops: Sequence[str],
    evaluation: Any = None,
    progress: bool = True,
):
    """Quantize `graph` in place for the resolved target `spec`; returns the QuantReport (None: no quantization)."""
    if quantize is None:
        return None
    from ember.passes.quantize import quantize_graph, target_features

    return quantize_graph(
        graph,
        calibration,
        arch=spec.arch,
        features=target_features(spec.target),
        mode=quantize,
        method=method,
        per_channel=per_channel,
        skip_ops=skip_ops,
        evaluation=evaluation,
        progress=progress,
    )


def fuse_prequantized(graph: Graph, spec: Any) -> bool:
    """A QDQ model's quantize/dequantize-wrapped layers become qconv2d/qdense for the target's scheme."""
    if not any(n.op == "dequantize" for n in graph.nodes):
        return False
    from ember.passes.quantize import scheme_for_target, target_features
    from ember.passes.quantize.qdq import fuse_qdq

    return fuse_qdq(graph, scheme_for_target(spec.arch, target_features(spec.target)))


def attach_report(artifact: Any, report: Any) -> None:
    """Put the report in the bundle as quant_report.json and its summary in metadata.json."""
    if report is None:
        return
    data = report.to_json()
    artifact.quant_report = report
    artifact.extra_files[REPORT] = json.dumps(data, indent=2) + "\n"
    artifact.metadata["quantization"] = {
        "mode": "int8",
        "scheme": data["scheme"],
        "method": data["method"],
        "report": REPORT,
    }
