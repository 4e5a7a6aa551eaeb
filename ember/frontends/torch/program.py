"""Walking an ExportedProgram's FX graph into Ember IR: inputs, weights as constants, the op table, outputs."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from ember.errors import EmberError
from ember.frontends.torch import nn_ops, recurrent_ops  # noqa: F401  (registers the layer ops)
from ember.frontends.torch.importer import Importer, bind, ember_dtype, module_path, node_name, to_numpy
from ember.frontends.torch.ops import ATEN_OPS
from ember.ir.graph import Graph, Value

_WEIGHTS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)


def is_shape_arithmetic(node: fx.Node) -> bool:
    """Whether `node` computes sizes (sym_size, SymInt arithmetic, runtime asserts): torch traced their values
    symbolically, so Ember keeps those values and emits nothing."""
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return t._opname.startswith(("sym_", "_assert"))
    return not isinstance(t, torch._ops.HigherOrderOperator) and t is not operator.getitem


def unsupported_ops(ep: ExportedProgram) -> dict[str, list[str]]:
    """ATen ops with no table entry, each with the module paths (or FX names) of the nodes that call it."""
    missing: dict[str, list[str]] = {}
    for node in ep.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem or is_shape_arithmetic(node):
            continue
        key = str(node.target)
        if key not in ATEN_OPS:
            where = module_path(node) or node.name
            if where not in missing.setdefault(key, []):
                missing[key].append(where)
    return missing


def user_inputs(ep: ExportedProgram) -> list[fx.Node]:
    kinds = {s.arg.name: s.kind for s in ep.graph_signature.input_specs}
    return [n for n in ep.graph.nodes if n.op == "placeholder" and kinds.get(n.name) == InputKind.USER_INPUT]


def dim_symbols(ep: ExportedProgram, given: Sequence[Sequence[str | None]]) -> dict[Any, str]:
    """Names for the dynamic dims of the inputs: the torch.export.Dim's name where `given` has it (one list per
    input, one entry per axis), else INPUT_dAXIS as the ONNX frontend names unnamed dims."""
    names: dict[Any, str] = {}
    for i, node in enumerate(user_inputs(ep)):
        for axis, d in enumerate(node.meta["val"].shape):
            if isinstance(d, torch.SymInt) and d.node.expr.is_Symbol and d.node.expr not in names:
                named = given[i][axis] if i < len(given) and axis < len(given[i]) else None
                names[d.node.expr] = named or f"{node.name}_d{axis}"
    return names


def static_sizes(ep: ExportedProgram, shapes: Mapping[str, Sequence[int]], file: str) -> dict[Any, int]:
    """The symbols `input_shapes` fixes, checked against the inputs' ranks and static dims."""
    inputs = {n.name: n for n in user_inputs(ep)}
    fixed: dict[Any, int] = {}
    for name, shape in shapes.items():
        if name not in inputs:
            raise EmberError(
                f"--input-shape names '{name}', which is not a model input",
                file=file,
                hint=f"inputs: {', '.join(inputs)}",
            )
        traced = list(inputs[name].meta["val"].shape)
        if len(traced) != len(shape):
            raise EmberError(
                f"--input-shape gives {len(shape)} dims for '{name}', which has rank {len(traced)}", file=file
            )
        for have, want in zip(traced, shape):
            if isinstance(have, torch.SymInt) and have.node.expr.is_Symbol:
                fixed[have.node.expr] = int(want)
            elif int(have) != int(want):
                raise EmberError(
                    f"--input-shape gives '{name}' dim {want} where the model fixes {int(have)}", file=file
                )
    return fixed


def import_program(ep: ExportedProgram, name: str, dim_names: dict[Any, str], static: dict[Any, int]) -> Graph:
    """Ember IR for a decomposed ExportedProgram."""
    missing = unsupported_ops(ep)
    if missing:
        listing = ", ".join(f"{op} (in {', '.join(repr(p) for p in paths[:3])})" for op, paths in missing.items())
        raise EmberError(f"unsupported ATen ops: {listing}", hint="rewrite those layers with supported ops")
    m = Importer(name, dim_names, static)
    specs = {s.arg.name: s for s in ep.graph_signature.input_specs}
    for node in ep.graph.nodes:
        m.node = node
        try:
            if node.op == "placeholder":
                _placeholder(m, ep, node, specs[node.name])
            elif node.op == "call_function":
                m.values[node.name] = _call(m, node)
            elif node.op == "output":
                _outputs(m, node)
        except EmberError as e:
            op = str(node.target) if node.op == "call_function" else node.op
            raise EmberError(e.message, node=e.node or node_name(node), op=e.op or op, hint=e.hint) from None
    m.graph.drop_unused_constants()
    return m.graph


def _placeholder(m: Importer, ep: ExportedProgram, node: fx.Node, spec) -> None:
    if spec.kind in _WEIGHTS:
        tensor = ep.state_dict[spec.target] if spec.target in ep.state_dict else ep.constants[spec.target]
        m.values[node.name] = m.graph.add_constant(to_numpy(tensor), spec.target)
        return
    if spec.kind != InputKind.USER_INPUT:
        raise EmberError(f"program input of kind {spec.kind.name} is not supported")
    val = node.meta["val"]
    if not isinstance(val, torch.Tensor):
        raise EmberError(f"input '{node.name}' is a {type(val).__name__}; Ember takes tensor inputs only")
    shape = [m.dim(d) for d in val.shape]
    v = m.graph.add_input(node.name, shape, ember_dtype(val.dtype))
    for axis, d in enumerate(val.shape):
        if isinstance(d, torch.SymInt) and d.node.expr.is_Symbol:
            m.sources.setdefault(d.node.expr, (v, axis))
    m.values[node.name] = v


def _call(m: Importer, node: fx.Node) -> Any:
    if node.target is operator.getitem:
        parts, index = m.values[node.args[0].name], node.args[1]
        if parts[index] is None and node.users:
            raise EmberError(f"output {index} of {node.args[0].target} (statistics or indices) is not supported")
        return parts[index]
    if is_shape_arithmetic(node):
        return node.meta.get("val")
    args = {k: m.resolve(v) for k, v in bind(node).items()}
    return ATEN_OPS[str(node.target)](m, args)


def _outputs(m: Importer, node: fx.Node) -> None:
    results = [m.values[a.name] if isinstance(a, fx.Node) else a for a in node.args[0]]
    names = ["output"] if len(results) == 1 else [f"output_{i}" for i in range(len(results))]
    outputs: list[Value] = []
    for v, name in zip(results, names):
        if not isinstance(v, Value):
            raise EmberError(f"{name} is a {type(v).__name__}, not a tensor")
        if v.is_const or v.producer is None or any(o is v for o in outputs):
            v = m.graph.add_node("identity", [v], name=name).output
        if v.name != name and not m.graph.has_value(name):
            m.graph.rename_value(v, name)
        outputs.append(v)
    m.graph.outputs = outputs
