"""The CLI's output files (opt's IR or ONNX, run's .npz), each written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ember.atomic import write_atomic
from ember.errors import EmberError


def save_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    write_atomic({Path(path): lambda f: np.savez(f, **arrays)})


def write_graph(graph, output: str | os.PathLike | None) -> None:
    """IR text (weights in a sidecar OUT.npz) or ONNX, chosen by suffix; stdout when `output` is None."""
    import sys

    from ember.ir.printer import print_graph

    if output is None or str(output) == "-":
        sys.stdout.write(print_graph(graph, {}))
        return
    out = Path(output)
    if out.suffix == ".onnx":
        from ember.backends.onnx_export import export_onnx

        model = export_onnx(graph)
        write_atomic({out: lambda f: f.write(model.SerializeToString())})
    elif out.suffix == ".ir":
        sidecar: dict[str, np.ndarray] = {}
        weights = out.with_suffix(".npz")
        text = print_graph(graph, sidecar, weights.name)
        files = {weights: lambda f: np.savez(f, **sidecar)} if sidecar else {}
        write_atomic(files | {out: lambda f: f.write(text.encode())})
    else:
        raise EmberError(f"cannot tell the format of '{out}'", hint="use a .ir or .onnx suffix")
