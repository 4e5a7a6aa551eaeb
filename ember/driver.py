"""The compile driver: frontend -> passes -> TVM backend -> Artifact."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ember.errors import EmberError
from ember.ir.fold import fold_scope
from ember.ir.graph import Graph
from ember.passes import PassManager, parse_pipeline


def _source_info(model: Any) -> dict[str, Any]:
    import onnx

    from ember.backends.artifact import sha256_file

    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        h = sha256_file(p) if p.is_file() else None
        return {"name": p.stem, "path": str(p), "sha256": h}
    if isinstance(model, onnx.ModelProto):
        return {
            "name": model.graph.name or "model",
            "path": None,
            "sha256": hashlib.sha256(model.SerializeToString()).hexdigest(),
        }
    if isinstance(model, Graph):
        return {"name": model.name, "path": None, "sha256": None}
    return {"name": type(model).__name__, "path": None, "sha256": None}


def _is_torch(model: Any) -> bool:
    """Whether `model` is a torch module or ExportedProgram, without importing torch when nobody has."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, (torch.nn.Module, torch.export.ExportedProgram))


def import_model(
    model: Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    example_inputs: Sequence[Any] | None = None,
    dynamic_shapes: Any = None,
) -> Graph:
    """Any supported model form (ONNX path or ModelProto, .pt2 path, torch module with `example_inputs` and
    optional `dynamic_shapes`, ExportedProgram, Ember Graph) as an Ember Graph."""
    import onnx

    if _is_torch(model) or isinstance(model, (str, os.PathLike)) and Path(model).suffix == ".pt2":
        return _torch_frontend().load(model, example_inputs, dynamic_shapes, input_shapes=input_shapes)
    if example_inputs is not None or dynamic_shapes is not None:
        raise EmberError("example_inputs and dynamic_shapes apply to PyTorch modules only")
    if isinstance(model, Graph):
        if input_shapes:
            raise EmberError("input_shapes apply when importing a model, not to an Ember Graph")
        return model
    if isinstance(model, onnx.ModelProto):
        from ember.frontends.onnx import load

        return load(model, input_shapes)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.suffix == ".ir":
            from ember.ir.parser import read_ir

            if input_shapes:
                raise EmberError("--input-shape applies to ONNX models; an .ir file states its shapes", file=str(path))
            return read_ir(path)
        from ember.frontends.onnx import load

        return load(path, input_shapes)
    raise EmberError(
        f"cannot compile a {type(model).__name__}; pass an ONNX or .pt2 file, a ModelProto or a torch.nn.Module"
    )


def _torch_frontend():
    try:
        import ember.frontends.torch as frontend
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        raise EmberError(
            "PyTorch models need torch, which is not installed", hint='pip install -e ".[torch]"'
        ) from None
    return frontend


def _value_info(v) -> dict[str, Any]:
    return {"name": v.name, "shape": list(v.shape), "dtype": v.dtype}


def _dump(dumper: Any, label: str, graph: Any, changed: bool = True) -> None:
    """--dump-ir for the stages outside the pass pipeline (import, QDQ fusion, sparsity, quantization)."""
    if dumper is not None and changed:
        dumper.write(dumper.next_stem(label), graph)


def layout_passes(wanted: str, passes: str | Sequence[str] | int, explicit: str | None) -> list[str]:
    """Passes that put convolutions in the `wanted` layout: always when the caller asked for a layout,
    otherwise only with an opt level of 2 or more."""
    if wanted.upper() not in ("NCHW", "NHWC"):
        raise EmberError(f"unknown layout '{wanted}'", hint="use NCHW or NHWC")
    level = passes if isinstance(passes, int) else None
    if isinstance(passes, str) and passes.strip().startswith("-O") and passes.strip()[2:].isdigit():
        level = int(passes.strip()[2:])
    if wanted.upper() == "NCHW" or (explicit is None and (level is None or level < 2)):
        return []
    return ["convert-to-nhwc", "canonicalize"]


@contextlib.contextmanager
def _errors_name_the_file(model: Any):
    """Errors from passes, quantization, lowering and the build name the model file too, as import errors do."""
    try:
        yield
    except EmberError as e:
        if isinstance(model, (str, os.PathLike)):
            raise e.with_file(str(model)) from None
        raise


def compile(  # noqa: A001  (the verb users expect: ember.compile)
    model: Any,
    target: str = "host",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    passes: str | Sequence[str] | int = 2,
    verify_each: bool = False,
    instruments: Sequence[Any] = (),
    dump_ir: str | os.PathLike | None = None,
    pass_plugins: Sequence[str | os.PathLike] = (),
    fold_limit: int | str | None = None,
    layout: str | None = None,
    example_inputs: Sequence[Any] | None = None,
    dynamic_shapes: Any = None,
    tuning_db: str | os.PathLike | None = None,
    quantize: str | None = None,
    calibration: Any = None,
    calibration_method: str = "percentile",
    per_channel: bool = True,
    skip_ops: Sequence[str] = (),
    evaluation: Any = None,
    sparsity: float | None = None,
    sparsity_options: Mapping[str, Any] | None = None,
    sparse_lowering: bool = True,
    winograd: bool = True,
    exec_mode: str | None = None,
):
    """Compile a model for `target`; returns an Artifact (call `.save(dir)` to write a bundle).

    `layout` ('NCHW' or 'NHWC') is the layout convolutions run in; by default the target's (NHWC on ARM
    CPUs) at -O2 and above, and left as imported for explicit pass lists.

    `fold_limit` caps each tensor that constant folding creates, at import and in passes: bytes or a size
    such as '64MiB' (the default; None keeps the enclosing `ember.ir.fold.fold_scope`'s).

    A torch.nn.Module is exported with `example_inputs` (and `dynamic_shapes`, torch.export.Dim per axis);
    `input_shapes` then fixes its dynamic dims.

    `tuning_db` is a directory `ember tune` wrote: kernels it has records for use the tuned schedules
    (an unusable database or one for another target logs a warning and changes nothing).

    `quantize="int8"` quantizes conv/dense layers after the fp32 pipeline from `calibration` (input dicts, an
    .npz or a folder of samples; see ember.passes.quantize.load_samples) by `calibration_method` (minmax,
    percentile, entropy), per-channel or per-tensor weights, leaving `skip_ops` (node names or op types) float;
    `artifact.quant_report` holds the accuracy report over `evaluation` (samples as for `calibration`; by
    default the calibration samples), saved as quant_report.json.

    `sparsity` prunes layers by magnitude (`sparsity_options`: pattern, scope, skip, threshold; see
    ember.sparsity.apply_sparsity); layers sparse enough lower to BSR kernels unless `sparse_lowering=False`.

    `winograd=False` runs every 3x3 conv directly; by default CPU float32 3x3 stride-1 convs with enough
    channels and pixels run as Winograd F(4x4, 3x3), faster but with 4x those layers' weight bytes.

    `exec_mode` is how TVM's VM runs the model's main function: "compiled" to machine code (the CPU default) or
    "bytecode", interpreted (the GPU default), whose calls TVM's instruments see (per-kernel timing)."""
    import tvm

    import ember
    from ember.backends.artifact import FORMAT, Artifact
    from ember.backends.tvm.build import build, default_exec_mode, device_sources
    from ember.backends.tvm.lower import lower_to_relax
    from ember.backends.tvm.targets import resolve
    from ember.passes.fuse_qconv_pool import fuse_qconv_pool
    from ember.passes.instruments import DumpIR
    from ember.passes.plugins import load_plugin
    from ember.quantization import attach_report, fuse_prequantized, quantize_for_target
    from ember.sparsity import apply_sparsity, attach_sparsity_report

    with _errors_name_the_file(model):
        spec = resolve(target)
        if exec_mode not in (None, "bytecode", "compiled"):
            raise EmberError(f"exec_mode must be 'bytecode' or 'compiled', not {exec_mode!r}")
        exec_mode = exec_mode or default_exec_mode(spec)
        verify_each = verify_each or os.environ.get("EMBER_VERIFY_EACH") == "1"
        for plugin in pass_plugins:
            load_plugin(plugin)
        dumper = DumpIR(dump_ir) if dump_ir is not None else None
        pipeline = parse_pipeline(passes) + layout_passes(spec.layout if layout is None else layout, passes, layout)
        manager = PassManager(pipeline, verify_each, list(instruments) + ([dumper] if dumper else []))
        with fold_scope(fold_limit):
            graph = import_model(model, input_shapes, example_inputs, dynamic_shapes)
            _dump(dumper, "input", graph)
            _dump(dumper, "after-fuse-qdq", graph, fuse_prequantized(graph, spec))
            manager.run(graph)
        lower_bsr = sparse_lowering and spec.device == "cpu"
        sparse_report = apply_sparsity(graph, sparsity, lowering=lower_bsr, **(sparsity_options or {}))
        _dump(dumper, "after-sparsity", graph, bool(sparse_report))
        quant = (quantize, calibration, calibration_method, per_channel, skip_ops, evaluation)
        quant_report = quantize_for_target(graph, spec, *quant)
        _dump(dumper, "after-quantize", graph, quant_report is not None)
        # CPU schedules only: a fused pool's epilogue is one more case TVM's GPU rules would have to take
        _dump(dumper, "after-fuse-qconv-pool", graph, spec.device == "cpu" and fuse_qconv_pool(graph))
        mod = lower_to_relax(graph, spec.device, winograd, spec.target)
        if dumper is not None:
            dumper.write_text("lowered-relax", ".py", mod.script(show_meta=False))
        tuned = None
        if tuning_db is not None:
            from ember.backends.tvm.tuned import TunedKernels

            tuned = TunedKernels.load(tuning_db, spec)
        executable = build(graph, spec, mod, tuned=tuned, exec_mode=exec_mode)
        metadata = {
            "format": FORMAT,
            "model": _source_info(model),
            "inputs": [_value_info(v) for v in graph.inputs],
            "outputs": [_value_info(v) for v in graph.outputs],
            "target": {
                "name": spec.name,
                "tvm": str(spec.target),
                "arch": spec.arch,
                "device": spec.device,
                "linker": spec.cross_compiler,
            },
            "passes": manager.pipeline,
            "layout": "NHWC" if "convert-to-nhwc" in manager.pipeline else "NCHW",
            "versions": {"ember": ember.__version__, "tvm": tvm.__version__},
            "library": None,
            "exec_mode": exec_mode,
        }
        if tuning_db is not None:
            metadata["tuning"] = {
                "database": str(tuning_db),
                "kernels_from_db": tuned.applied if tuned else 0,
                "kernels_kept_on_rules": tuned.kept_on_rules if tuned else 0,
            }
        artifact = Artifact(metadata, executable, sources=device_sources(executable))
        attach_report(artifact, quant_report)
        attach_sparsity_report(artifact, sparse_report)
        artifact.graph = graph
        artifact.pass_records = manager.records
        return artifact
