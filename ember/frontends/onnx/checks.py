"""Structural checks on an ONNX graph before import: each value defined once, required operands present,
attributes of the declared type."""

from __future__ import annotations

import onnx
import onnx.defs

from ember.errors import EmberError


def check_graph(proto: onnx.ModelProto, file: str) -> None:
    """Raise an EmberError naming the node when a value is defined twice, a required operand is missing or an
    attribute has the wrong type."""
    opsets = {o.domain or "": o.version for o in proto.opset_import}
    defined = {t.name: "a graph input" for t in proto.graph.input}
    defined.update({t.name: "an initializer" for t in proto.graph.initializer})
    for i, node in enumerate(proto.graph.node):
        texts = [node.name, node.op_type, node.domain, *node.input, *node.output]
        if not all(isinstance(t, str) for t in texts):
            raise EmberError(f"node {i} has a name or op type that is not valid UTF-8", file=file)
        label = node.name or (node.output[0] if node.output else "?")
        for out in node.output:
            if out and out in defined:
                raise EmberError(
                    f"value '{out}' is defined twice, by {defined[out]} and by this node",
                    file=file,
                    node=label,
                    op=node.op_type,
                    hint="give every node output a unique name",
                )
            defined[out] = f"node '{label}'"
        _check_against_schema(node, label, opsets, file)


def _check_against_schema(node: onnx.NodeProto, label: str, opsets: dict[str, int], file: str) -> None:
    """Required operands present and attributes of the declared type, by the op's ONNX schema."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    try:
        schema = onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), domain)
    except onnx.defs.SchemaError:
        return
    required = onnx.defs.OpSchema.FormalParameterOption.Single
    for i, formal in enumerate(schema.inputs):
        if formal.option == required and (i >= len(node.input) or not node.input[i]):
            raise EmberError(
                f"required operand {i} ('{formal.name}') is missing", file=file, node=label, op=node.op_type
            )
    for attr in node.attribute:
        want = schema.attributes.get(attr.name)
        if want is None or int(want.type) == attr.type:
            continue
        have = onnx.AttributeProto.AttributeType.Name(attr.type)
        raise EmberError(
            f"attribute '{attr.name}' is {have}, {node.op_type} expects {want.type.name}",
            file=file,
            node=label,
            op=node.op_type,
        )
