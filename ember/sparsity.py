"""Sparsity in a compile: prune to a target sparsity (optional), then lower sparse-enough layers to BSR kernels."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ember.errors import EmberError
from ember.ir.graph import Graph
from ember.passes.prune import check_sparsity, parse_pattern, prune
from ember.passes.sparse_lowering import LayerSparsity, lower_sparse


def apply_sparsity(
    graph: Graph,
    sparsity: float | None = None,
    pattern: str = "unstructured",
    scope: str = "layer",
    skip: Sequence[str] = (),
    threshold: float | None = None,
    lowering: bool = True,
) -> list[LayerSparsity]:
    """Prune `graph` when `sparsity` is given (an N:M pattern alone prunes to 1 - N/M), then lower layers
    whose stored weight fraction is under `threshold` (default: ember.passes.sparse_lowering's, by block) to
    sparse_dense unless `lowering` is False."""
    pat = parse_pattern(pattern)
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise EmberError(f"sparse threshold {threshold} is outside (0, 1]", hint="e.g. --sparse-threshold 0.35")
    if sparsity is not None:
        check_sparsity(float(sparsity))
    if pat.kind == "nm":
        fixed = 1 - pat.a / pat.b
        if sparsity is not None and abs(float(sparsity) - fixed) > 1e-9:
            raise EmberError(f"pattern {pat} fixes the sparsity at {fixed:g}, not {sparsity}", hint="drop --sparsity")
        sparsity = fixed
    elif sparsity is None and (pattern != "unstructured" or skip or scope != "layer"):
        raise EmberError("a sparsity pattern, scope or skip list needs a target sparsity", hint="add --sparsity 0.9")
    left = prune(graph, float(sparsity), pat, scope, skip) if sparsity is not None else {}
    report = lower_sparse(graph, threshold if lowering else 0.0)
    for row in report:
        row.note = "; ".join(x for x in (left.get(row.layer), row.note if lowering else "sparse lowering off") if x)
    return report


def attach_sparsity_report(artifact, report: list[LayerSparsity]) -> None:
    """Keep the report on the artifact, totals in its metadata, and the report in the bundle's sparsity_report.json."""
    artifact.sparsity_report = report
    if any(r.format == "bsr" or r.density < 1.0 for r in report):  # dense models' bundles stay as they were
        artifact.extra_files["sparsity_report.json"] = json.dumps([r.to_json() for r in report], indent=2)
    if any(r.format == "bsr" for r in report):
        dense = sum(r.bytes_dense for r in report)
        stored = sum(r.bytes_stored for r in report)
        artifact.metadata["sparsity"] = {
            "layers_bsr": sum(r.format == "bsr" for r in report),
            "weight_bytes_dense": dense,
            "weight_bytes_stored": stored,
        }


def format_report(report: list[LayerSparsity]) -> list[str]:
    """The report as aligned text lines: layer, shape, density, format, block, bytes dense -> stored."""
    lines = [
        f"{'layer':<28} {'W [N,K]':>12} {'density':>8} {'format':>6} {'block':>5} {'dense B':>10} {'stored B':>10}"
    ]
    for r in report:
        shape = f"{r.shape[0]}x{r.shape[1]}"
        lines.append(
            f"{r.layer[:28]:<28} {shape:>12} {r.density:>8.3f} {r.format:>6} {r.block:>5} "
            f"{r.bytes_dense:>10} {r.bytes_stored:>10}" + (f"  {r.note}" if r.note else "")
        )
    dense, stored = sum(r.bytes_dense for r in report), sum(r.bytes_stored for r in report)
    if report:
        lines.append(f"weights: {dense} B dense -> {stored} B stored ({stored / max(dense, 1):.2f}x)")
    return lines
