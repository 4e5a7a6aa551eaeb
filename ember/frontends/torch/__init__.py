"""PyTorch frontend: torch.export programs (from a module and example inputs, an ExportedProgram, or a .pt2
file written by torch.export.save) -> Ember IR, through a table of ATen core ops. Importing it imports torch;
`import ember` does not."""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.export import ExportedProgram

from ember.errors import EmberError
from ember.frontends.torch.program import ATEN_OPS, dim_symbols, import_program, static_sizes
from ember.frontends.torch.recurrent_ops import keeps_lstm_whole
from ember.ir.fold import fold_scope
from ember.ir.graph import Graph

__all__ = ["ATEN_OPS", "KEPT_WHOLE", "export", "load", "read_program"]

# Composite ops Ember has as one op: kept out of the decomposition to the core ATen set, so that a Linear
# stays one dense and attention one attention node. Programs decomposed further still import.
KEPT_WHOLE = (
    "linear.default",
    "scaled_dot_product_attention.default",
    "hardswish.default",
    "hardsigmoid.default",
    "silu.default",
    "unbind.int",
    "adaptive_avg_pool2d.default",
    "pad.default",
    "gru.input",
)


def read_program(path: str | os.PathLike) -> ExportedProgram:
    """An ExportedProgram from a .pt2 archive written by torch.export.save."""
    p = Path(path)
    if not p.is_file():
        raise EmberError("no such file" if not p.exists() else "not a file", file=str(path))
    if not zipfile.is_zipfile(p):
        raise EmberError("not a torch.export archive (.pt2 files are zip archives)", file=str(path))
    log = logging.getLogger("torch.export")
    level = log.level
    log.setLevel(logging.ERROR)  # torch logs a traceback before it raises
    try:
        return torch.export.load(str(p))
    except Exception as e:  # torch raises zipfile, pickle and runtime errors on bad archives
        raise EmberError(
            f"not a readable torch.export archive ({type(e).__name__}: {_line(e)})", file=str(path)
        ) from None
    finally:
        log.setLevel(level)


def export(
    module: torch.nn.Module, example_inputs: Sequence[Any], dynamic_shapes: Any = None, *, strict: bool = False
) -> ExportedProgram:
    """torch.export.export in eval mode (the module's mode is restored), rejections as one-line EmberErrors."""
    if not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    training = module.training
    module.eval()
    try:
        return torch.export.export(module, tuple(example_inputs), dynamic_shapes=dynamic_shapes, strict=strict)
    except Exception as e:  # export reports rejections as many unrelated types
        hint = (
            "pass strict=False to trace the module's Python without TorchDynamo"
            if strict
            else "make the rejected code independent of tensor values (torch.cond, torch.where), or pass strict=True"
        )
        file = f"<{type(module).__name__}>"
        raise EmberError(f"torch.export rejected the module: {_line(e)}", file=file, hint=hint) from None
    finally:
        module.train(training)


def _line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]


def decompose(ep: ExportedProgram) -> ExportedProgram:
    """The program in the core ATen op set, except the composites Ember keeps whole (LSTMs only where each maps
    onto Ember's lstm op)."""
    table = torch.export.default_decompositions()
    lstms = [n for n in ep.graph.nodes if n.target is torch.ops.aten.lstm.input]
    kept = KEPT_WHOLE + (("lstm.input",) if all(keeps_lstm_whole(n) for n in lstms) else ())
    for name in kept:
        packet, overload = name.split(".")
        table.pop(getattr(getattr(torch.ops.aten, packet), overload), None)
    return ep.run_decompositions(table)


def _dim_names(dynamic_shapes: Any) -> list[list[str | None]]:
    """Per input, per axis: the name of the torch.export.Dim that `dynamic_shapes` gives it."""
    if dynamic_shapes is None:
        return []
    specs = list(dynamic_shapes.values()) if isinstance(dynamic_shapes, Mapping) else list(dynamic_shapes)
    names = []
    for spec in specs:
        axes = dict(spec) if isinstance(spec, Mapping) else dict(enumerate(spec or []))
        rank = max(axes, default=-1) + 1
        names.append([getattr(axes.get(i), "__name__", None) for i in range(rank)])
    return names


def load(
    model: torch.nn.Module | ExportedProgram | str | os.PathLike,
    example_inputs: Sequence[Any] | None = None,
    dynamic_shapes: Any = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    strict: bool = False,
    fold_limit: int | str | None = None,
) -> Graph:
    """Import a PyTorch model into Ember IR. A module is exported (in eval mode) with `example_inputs` and
    `dynamic_shapes` (torch.export.Dim per dynamic axis; its name becomes the Ember dim's); `input_shapes`
    fixes dynamic dims, as --input-shape does. Node names keep module paths (`layer1.0.conv1`)."""
    if isinstance(model, (str, os.PathLike)):
        file, ep = str(model), read_program(model)
    elif isinstance(model, ExportedProgram):
        file, ep = "<ExportedProgram>", model
    elif isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise EmberError(f"exporting {type(model).__name__} needs example_inputs", hint="pass example_inputs=(x,)")
        file, ep = f"<{type(model).__name__}>", export(model, example_inputs, dynamic_shapes, strict=strict)
    else:
        raise EmberError(
            f"cannot import a {type(model).__name__}; pass a torch.nn.Module, ExportedProgram or .pt2 file"
        )
    name = Path(file).stem if file[0] != "<" else file.strip("<>")
    with fold_scope(fold_limit):
        try:
            ep = decompose(ep)
            static = static_sizes(ep, input_shapes or {}, file)
            return import_program(ep, name, dim_symbols(ep, _dim_names(dynamic_shapes)), static)
        except EmberError as e:
            raise e.with_file(file) from None
