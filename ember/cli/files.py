"""Writing CLI output files atomically (temporary file, then rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ember.errors import EmberError


def save_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    _atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(out: Path, write) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else ".")
    except OSError as e:
        raise EmberError(f"cannot write '{out}': {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


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
        _atomic_write(out, lambda f: f.write(model.SerializeToString()))
    elif out.suffix == ".ir":
        sidecar: dict[str, np.ndarray] = {}
        weights = out.with_suffix(".npz")
        text = print_graph(graph, sidecar, weights.name)
        if sidecar:
            _atomic_write(weights, lambda f: np.savez(f, **sidecar))
        write_text_atomic(out, text)
    else:
        raise EmberError(f"cannot tell the format of '{out}'", hint="use a .ir or .onnx suffix")
