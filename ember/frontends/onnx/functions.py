"""ONNX ops that Ember has no rule for but whose schema defines them as a function of other ops (Attention,
RotaryEmbedding, MeanVarianceNormalization, ...): the node is replaced by that function's body, as onnxruntime
expands them, and the body's ops import as usual."""

from __future__ import annotations

from collections.abc import Callable

import onnx
from onnx import FunctionProto, NodeProto, TypeProto

MAX_ROUNDS = 8  # bodies that use further function ops expand again, this many times at most


def expand_functions(proto: onnx.ModelProto, known: Callable[[NodeProto], bool]) -> onnx.ModelProto:
    """`proto` with every default-domain node that `known` rejects and that has a usable function body
    replaced by that body (a copy; `proto` itself when nothing expands)."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        return proto
    for round_ in range(MAX_ROUNDS):
        todo = [i for i, n in enumerate(proto.graph.node) if not known(n) and _schema(n, opset)]
        if not todo:
            break
        if round_ == 0:
            proto = _copy(proto)
        types = _value_types(proto)
        nodes: list[NodeProto] = []
        expanded = False
        for i, node in enumerate(proto.graph.node):
            body = _body(node, opset, types, f"{node.name or node.output[0]}/{i}/") if i in todo else None
            nodes.extend(body if body is not None else [node])
            expanded |= body is not None
        if not expanded:
            break
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
    return proto


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def _schema(node: NodeProto, opset: int):
    if node.domain not in ("", "ai.onnx") or not onnx.defs.has(node.op_type):
        return None
    try:
        schema = onnx.defs.get_schema(node.op_type, opset)
    except onnx.defs.SchemaError:
        return None
    return schema if schema.has_function or schema.has_context_dependent_function else None


def _value_types(proto: onnx.ModelProto) -> dict[str, TypeProto]:
    """Every value's type that ONNX shape inference finds (a context-dependent body depends on its inputs')."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # an inference failure leaves the types it did not reach unknown
        inferred = proto
    g = inferred.graph
    types = {v.name: v.type for v in [*g.input, *g.value_info, *g.output]}
    for t in g.initializer:
        types.setdefault(t.name, onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims)))
    return types


def _body(node: NodeProto, opset: int, types: dict[str, TypeProto], prefix: str) -> list[NodeProto] | None:
    """The nodes of `node`'s function body, renamed into the graph; None when the body cannot be used here."""
    schema = _schema(node, opset)
    function = FunctionProto()
    if schema.has_function:
        versions = [v for v in schema.function_opset_versions if v <= opset]
        if not versions:
            return None
        function.ParseFromString(schema.get_function_with_opset_version(max(versions)))
    else:
        versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
        if not versions or any(name and name not in types for name in node.input):
            return None
        inputs = [(types[name] if name else TypeProto()).SerializeToString() for name in node.input]
        with_defaults = _with_default_attributes(node, schema)
        function.ParseFromString(
            schema.get_context_dependent_function_with_opset_version(
                max(versions), with_defaults.SerializeToString(), inputs
            )
        )
    if not _same_semantics(function, opset):
        return None
    return _renamed(function, _with_default_attributes(node, schema), prefix)


def _with_default_attributes(node: NodeProto, schema) -> NodeProto:
    out = NodeProto()
    out.CopyFrom(node)
    given = {a.name for a in node.attribute}
    for name, attr in schema.attributes.items():
        if name not in given and attr.default_value.name:
            out.attribute.append(attr.default_value)
    return out


def _same_semantics(function: FunctionProto, opset: int) -> bool:
    """Whether each op of a body written against an older opset means the same at the model's opset (ReduceMean
    took its axes as an attribute before 18, an input since)."""
    written = next((o.version for o in function.opset_import if o.domain in ("", "ai.onnx")), opset)
    for n in function.node:
        if n.domain not in ("", "ai.onnx"):
            return False
        if written != opset and onnx.defs.has(n.op_type):
            then, now = (onnx.defs.get_schema(n.op_type, v).since_version for v in (written, opset))
            if then != now:
                return False
    return True


def _renamed(function: FunctionProto, node: NodeProto, prefix: str) -> list[NodeProto] | None:
    """The body's nodes with its formal inputs and outputs renamed to the node's, its other values prefixed, and
    its attribute references resolved against the node's attributes; None if a body node holds a subgraph."""
    names = {f: node.input[i] if i < len(node.input) else "" for i, f in enumerate(function.input)}
    names.update({f: a for f, a in zip(function.output, node.output) if a})
    attrs = {a.name: a for a in node.attribute}

    def rename(name: str) -> str:
        return names.get(name, prefix + name if name else "")

    out = []
    for inner in function.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in inner.attribute):
            return None
        copy = NodeProto()
        copy.CopyFrom(inner)
        copy.name = prefix + (inner.name or inner.output[0])
        copy.input[:] = [rename(i) for i in inner.input]
        copy.output[:] = [rename(o) for o in inner.output]
        del copy.attribute[:]
        for a in inner.attribute:
            if not a.ref_attr_name:
                copy.attribute.append(a)
            elif a.ref_attr_name in attrs:
                resolved = onnx.AttributeProto()
                resolved.CopyFrom(attrs[a.ref_attr_name])
                resolved.name = a.name
                copy.attribute.append(resolved)
        out.append(copy)
    return out
