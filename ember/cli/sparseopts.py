"""`ember compile`'s sparsity options: pruning to a target sparsity and lowering sparse layers to BSR kernels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ember.passes.prune import PATTERN_HELP
from ember.passes.sparse_lowering import BLOCKED_THRESHOLD, DEFAULT_THRESHOLD


def sparse_options(fn: Callable) -> Callable:
    """--sparsity, --sparsity-pattern, --sparsity-scope, --sparsity-skip, --sparse-threshold, --no-sparse-lowering."""
    options = [
        click.option(
            "--sparsity", type=float, help="Prune each dense/1x1-conv layer's weights to this fraction of zeros."
        ),
        click.option(
            "--sparsity-pattern", default="unstructured", show_default=True, help=f"Pruning pattern: {PATTERN_HELP}."
        ),
        click.option(
            "--sparsity-scope",
            type=click.Choice(["layer", "global"]),
            default="layer",
            show_default=True,
            help="Prune each layer to the sparsity, or all layers together by one magnitude cut.",
        ),
        click.option(
            "--sparsity-skip",
            multiple=True,
            metavar="NAMES",
            help="Layers (names or globs, comma-separated) to leave dense.",
        ),
        click.option(
            "--sparse-threshold",
            type=float,
            help="Layers whose stored weight fraction is under this run BSR kernels "
            f"[default: {DEFAULT_THRESHOLD} unstructured, {BLOCKED_THRESHOLD} in blocks of 4+].",
        ),
        click.option("--no-sparse-lowering", is_flag=True, help="Keep every layer dense (pruning still applies)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def sparse_kwargs(o: dict[str, Any]) -> dict[str, Any]:
    """ember.compile's sparsity arguments from the options (removed from `o`)."""
    skip = [name.strip() for arg in o.pop("sparsity_skip") for name in arg.split(",") if name.strip()]
    options = {
        "pattern": o.pop("sparsity_pattern"),
        "scope": o.pop("sparsity_scope"),
        "skip": skip,
        "threshold": o.pop("sparse_threshold"),
    }
    return {
        "sparsity": o.pop("sparsity"),
        "sparsity_options": options,
        "sparse_lowering": not o.pop("no_sparse_lowering"),
    }


def print_sparse_report(artifact) -> None:
    """The per-layer sparsity report, when any layer was pruned or lowered to BSR."""
    from ember.sparsity import format_report

    report = getattr(artifact, "sparsity_report", None) or []
    if any(r.format == "bsr" or r.density < 1.0 for r in report):
        click.echo("\n".join(format_report(report)))
