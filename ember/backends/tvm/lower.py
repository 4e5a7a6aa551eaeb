"""Lowering Ember IR to a Relax IRModule: one rule per op, weights as constants."""

from __future__ import annotations

import functools

import numpy as np
import tvm
from tvm import relax

import ember.backends.tvm.quant_dense  # noqa: F401  (registers the qdense rule)
import ember.backends.tvm.quant_rules  # noqa: F401  (registers the integer ops' rules)
from ember.backends.tvm import (  # noqa: F401  (rule registration)
    attention_rules,
    concat_rules,
    recurrent_rules,
    reduce_rules,
    shape_rules,
    sparse,
)
from ember.backends.tvm.rules import RULES, Lowering
from ember.backends.tvm.schedules.common import vector_bits
from ember.backends.tvm.schedules.contraction import matmul_row_limit
from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.graph import Graph, Value
from ember.ir.ops import get_schema


def _struct(v: Value, syms: dict[str, tvm.tirx.Var]) -> relax.TensorType:
    dims = []
    for d in v.shape:
        if isinstance(d, int):
            dims.append(d)
        elif d == "?":
            raise EmberError(f"value '{v.name}' has an unknown dim", hint="pass --input-shape to fix dynamic dims")
        else:
            dims.append(syms.setdefault(d, tvm.tirx.Var(d, "int64")))
    return relax.TensorType(dims, dtypes.to_tvm(v.dtype))


def unsupported_ops(graph: Graph) -> dict[str, str]:
    """Ops in `graph` with neither a lowering rule nor a decomposition, each with the first node that uses it."""
    missing: dict[str, str] = {}
    for n in graph.nodes:
        if n.op not in RULES and get_schema(n.op).decompose is None:
            missing.setdefault(n.op, n.name)
    return missing


def lower_to_relax(
    graph: Graph, device: str = "cpu", winograd: bool = True, target: tvm.target.Target | None = None
) -> tvm.IRModule:
    """Build the Relax module `main(inputs...) -> (outputs...)` for `graph`, for a target of `device` kind;
    `winograd=False` keeps every 3x3 conv direct. `target` is the one the kernels are scheduled for: some rules
    shape their tensors to its register tiles (Winograd's padded tiles); without it, to 128-bit vectors'."""
    missing = unsupported_ops(graph)
    if missing:
        listing = ", ".join(f"{op} (node '{name}')" for op, name in missing.items())
        raise EmberError(f"no TVM lowering for ops: {listing}")
    bb = relax.BlockBuilder()
    syms: dict[str, tvm.tirx.Var] = {}
    params = [relax.Var(v.name, _struct(v, syms)) for v in graph.inputs]
    bits = 128 if target is None else vector_bits(target)
    lowering = Lowering(bb, device, winograd, functools.partial(matmul_row_limit, bits=bits))
    env = lowering.values
    env.update({id(v): p for v, p in zip(graph.inputs, params)})
    absorbed = lowering.plan_absorbed(graph)

    def arg(v: Value | None):
        absorbed_output = v is not None and v.producer is not None and id(v.producer) in absorbed
        return None if absorbed_output else lowering.operand(env, v)

    try:  # the dataflow scope opens a block on its way out of an error; left open, TVM warns when bb is freed
        with bb.function("main", params):
            with bb.dataflow():
                for node in (n for n in graph.nodes if id(n) not in absorbed):
                    try:
                        rule = RULES.get(node.op, Lowering.decomposed)  # a composite without a rule of its own
                        result = _empty(lowering, node) or rule(lowering, node, [arg(v) for v in node.inputs])
                        results = result if isinstance(result, list) else [result]
                        for out, expr in zip(node.outputs, results):
                            env[id(out)] = bb.emit(expr, name_hint=_hint(out.name))
                    except EmberError as e:
                        raise EmberError(e.message, node=node.name, op=node.op, hint=e.hint) from None
                    except (RuntimeError, ValueError, TypeError, AttributeError) as e:  # tvm_ffi raises RuntimeErrors
                        msg = _diagnostic(str(e)) or type(e).__name__
                        raise EmberError(f"TVM rejected the lowering: {msg}", node=node.name, op=node.op) from None
                outs = bb.emit_output(relax.Tuple([arg(v) for v in graph.outputs]))
            bb.emit_func_output(outs)
    except EmberError:
        bb._end_block()
        raise
    return bb.get()


def _diagnostic(text: str) -> str:
    """The line of a TVM error that says what went wrong: a TVMScript diagnostic's `error:` line (its last lines
    quote the source and underline it), else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    error = [ln.removeprefix("error:").strip() for ln in lines if ln.startswith("error:")]
    return (error or lines[-1:] or [""])[-1][:200]


def _empty(lowering, node) -> list | None:
    """A node whose results all hold no elements (a zero-length slice): constants; no kernel loops zero times."""
    if not all(o.is_static and 0 in o.shape for o in node.outputs):
        return None
    return [lowering.const(np.zeros(o.shape, dtypes.to_numpy(o.dtype))) for o in node.outputs]


def _hint(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"v_{cleaned}"
