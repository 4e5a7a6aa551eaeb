"""ONNX frontend: ONNX files or ModelProtos -> Ember IR, through onnx-graphsurgeon."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import onnx
import onnx_graphsurgeon as gs

from ember.errors import EmberError
from ember.frontends.onnx.checks import check_graph
from ember.frontends.onnx.functions import expand_functions
from ember.frontends.onnx.importer import MAX_NODES, Importer, apply_input_shapes, input_dims, read_model
from ember.frontends.onnx.ops import ONNX_OPS, op_key
from ember.ir import dtypes
from ember.ir.fold import fold_scope
from ember.ir.graph import Graph

__all__ = ["ONNX_OPS", "load", "read_model"]


def _dtype_of(t: gs.Tensor) -> str:
    import numpy as np

    if t.dtype is None:
        return "f32"
    try:
        dtype = np.dtype(t.dtype) if not isinstance(t.dtype, int) else onnx.helper.tensor_dtype_to_np_dtype(t.dtype)
    except (KeyError, TypeError):
        raise EmberError(f"graph input '{t.name}' has an undefined or unknown element type ({t.dtype})") from None
    return dtypes.from_numpy(dtype)


def _unsupported(graph: gs.Graph, opset_domains: dict[str, int], file: str) -> None:
    missing: dict[str, str] = {}
    for node in graph.nodes:
        key = op_key(node)
        if key not in ONNX_OPS and key not in missing:
            missing[key] = node.name or (node.outputs[0].name if node.outputs else "?")
    if missing:
        listing = ", ".join(f"{op} (node '{name}')" for op, name in missing.items())
        raise EmberError(f"unsupported ONNX ops: {listing}", file=file)


def load(
    model: str | os.PathLike | onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    fold_limit: int | str | None = None,
) -> Graph:
    """Import an ONNX model into Ember IR; `input_shapes` fixes dynamic input dims. Import folds what is
    known, up to `fold_limit` bytes per tensor (an int or '64MiB'; None: the enclosing `fold_scope`'s)."""
    file = str(model) if not isinstance(model, onnx.ModelProto) else "<model>"
    external: dict = {}
    proto = read_model(model, external) if not isinstance(model, onnx.ModelProto) else model
    quiet = gs.logger.G_LOGGER.suppress(gs.logger.G_LOGGER.CRITICAL + 1)  # it prints to stdout, then raises
    with fold_scope(fold_limit), quiet:
        try:
            return _import(proto, input_shapes or {}, file, external)
        except EmberError as e:
            raise e.with_file(file) from None
        except RecursionError:
            raise EmberError("model is nested too deeply to import", file=file) from None


def _import(proto: onnx.ModelProto, input_shapes, file: str, external: dict) -> Graph:
    if len(proto.graph.node) > MAX_NODES:
        raise EmberError(f"model has {len(proto.graph.node)} nodes; the limit is {MAX_NODES}", file=file)
    opsets = {o.domain or "": o.version for o in proto.opset_import}
    check_graph(proto, file)
    proto = expand_functions(proto, lambda n: n.op_type in ONNX_OPS)  # default-domain nodes only
    try:
        graph = gs.import_onnx(proto)
    except Exception as e:
        raise EmberError(f"malformed ONNX graph ({type(e).__name__}: {str(e)[:160]})", file=file) from None
    _unsupported(graph, opsets, file)
    apply_input_shapes(graph, input_shapes, file)
    try:
        graph.toposort()
    except Exception as e:
        raise EmberError(
            f"graph cannot be ordered, it has a cycle or a dangling edge ({str(e)[:120]})", file=file
        ) from None
    m = Importer(file, opsets.get("", opsets.get("ai.onnx", 13)), external)
    m.graph.name = proto.graph.name or "main"
    for t in graph.inputs:
        if isinstance(t, gs.Constant):
            continue
        m.values[t.name] = m.graph.add_input(t.name, input_dims(t), _dtype_of(t))
    read = m.read = {t.name for t in graph.outputs} | {t.name for n in graph.nodes for t in n.inputs}
    for node in graph.nodes:
        m.node = node
        try:
            outs = ONNX_OPS[op_key(node)](m, node)
        except EmberError as e:
            raise EmberError(
                e.message, file=file, node=node.name or node.outputs[0].name, op=node.op, hint=e.hint
            ) from None
        for t, v in zip(node.outputs, outs):
            m.values[t.name] = v
        _check_unmade_outputs(node, outs, read, file)
    m.node = None
    outputs = []
    for t in graph.outputs:
        if t.name not in m.values:
            if isinstance(t, gs.Constant):
                m.inp(gs.Node("Identity", inputs=[t]), 0)
            else:
                raise EmberError(f"graph output '{t.name}' is not produced by any node", file=file)
        outputs.append(m.values[t.name])
    m.graph.outputs = outputs
    m.graph.drop_unused_constants()
    return m.graph


def _check_unmade_outputs(node: gs.Node, outs: list, read: set[str], file) -> None:
    """An optional output Ember does not compute (LayerNormalization's Mean, say) must have no reader: no node
    and no graph output among `read`, the names read."""
    for i, t in enumerate(node.outputs[len(outs) :], start=len(outs)):
        if t.name and t.name in read:
            raise EmberError(
                f"Ember does not compute output {i} ('{t.name}') of {node.op}",
                file=file,
                node=node.name or node.outputs[0].name,
                op=node.op,
                hint="export the model without using that output",
            )
