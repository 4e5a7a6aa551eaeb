"""Building Ember IR from an ExportedProgram's FX graph: operand binding, module-path names, symbolic dims."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import fx

from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.fold import add_or_fold
from ember.ir.graph import Graph, Value
from ember.ir.ops.shapes import UNKNOWN

_NUMPY_OF = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.int8: np.int8,
    torch.int16: np.int16,
    torch.int32: np.int32,
    torch.int64: np.int64,
    torch.uint8: np.uint8,
    torch.bool: np.bool_,
}


def ember_dtype(dtype: torch.dtype) -> str:
    if dtype not in _NUMPY_OF:
        raise EmberError(f"unsupported element type {dtype}", hint="cast the model to float32 before exporting")
    return dtypes.from_numpy(_NUMPY_OF[dtype])


def to_numpy(t: torch.Tensor) -> np.ndarray:
    ember_dtype(t.dtype)  # names the model's unsupported type
    return t.detach().cpu().contiguous().numpy()


def module_path(node: fx.Node) -> str | None:
    """The dotted path of the innermost module that ran `node` (`layer1.0.conv1`), None at the top level."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = [path for path, _ in stack.values() if isinstance(path, str) and path and not path.startswith("_")]
    return paths[-1] if paths else None


def _is_leaf_module(node: fx.Node) -> bool:
    stack = node.meta.get("nn_module_stack") or {}
    kinds = [kind for _, kind in stack.values()]
    return bool(kinds) and isinstance(kinds[-1], str) and kinds[-1].startswith("torch.nn.modules.")


def node_name(node: fx.Node) -> str:
    """Ember's name for what `node` computes: the module path for a torch.nn layer (`layer1.0.conv1`), the path
    and the op for code in a module's forward (`layer1.0.add`), the FX name at the top level."""
    path = module_path(node)
    op = re.sub(r"_\d+$", "", node.name).lstrip("_") or "v"
    if path is None:
        return op
    return path if _is_leaf_module(node) else f"{path}.{op}"


def bind(node: fx.Node) -> dict[str, Any]:
    """The operands of an ATen call by schema name, defaults filled in."""
    schema = node.target._schema
    out = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args) and not arg.kwarg_only:
            out[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            out[arg.name] = node.kwargs[arg.name]
        else:
            out[arg.name] = arg.default_value if arg.has_default_value() else None
    return out


class Importer:
    """Maps FX nodes onto an Ember Graph, folding what is known at import time."""

    def __init__(self, name: str, dim_names: dict[Any, str], static: dict[Any, int]):
        self.graph = Graph(name)
        self.values: dict[str, Any] = {}
        self.dim_names = dim_names  # symbol of an input's dynamic dim -> its Ember name
        self.static = static  # symbol -> the size input_shapes fixed it to
        self.sources: dict[Any, tuple[Value, int]] = {}  # symbol -> (graph input, axis) it is read from
        self.node: fx.Node | None = None

    # ---- operands -----------------------------------------------------------------------
    def resolve(self, a: Any) -> Any:
        """An FX argument with its nodes replaced by what they became: Values, lists, or symbolic ints."""
        if isinstance(a, fx.Node):
            return self.values[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self.resolve(x) for x in a)
        return a

    def tensor(self, a: Any, dtype: str | None = None) -> Value:
        """A tensor operand; a Python number becomes a constant of `dtype` (the node's result type if None)."""
        if isinstance(a, Value):
            return a
        if isinstance(a, (bool, int, float)):
            dt = dtype or self.out_dtype()
            return self.graph.add_constant(np.asarray(a, dtype=dtypes.to_numpy(dt)), "scalar")
        raise EmberError(f"expected a tensor operand, got {type(a).__name__} {a!r}")

    def const_ints(self, a: Any, what: str) -> list[int]:
        vals = [a] if not isinstance(a, (list, tuple)) else list(a)
        if not all(isinstance(v, int) for v in vals):
            raise EmberError(f"{what} {list(vals)} depends on a dynamic dim", hint="export with static shapes")
        return [int(v) for v in vals]

    # ---- the node being imported --------------------------------------------------------
    def out_val(self) -> Any:
        val = self.node.meta.get("val")
        return val[0] if isinstance(val, (list, tuple)) else val

    def out_dtype(self) -> str:
        val = self.out_val()
        return ember_dtype(val.dtype) if isinstance(val, torch.Tensor) else "f32"

    def out_shape(self) -> list:
        """The node's result shape as torch traced it: ints and SymInts."""
        return list(self.out_val().shape)

    def dim(self, d: Any) -> int | str:
        """An Ember dim for a traced size: an int, an input's named dim, or '?' for one computed from it."""
        if isinstance(d, int):
            return d
        expr = d.node.expr.subs(self.static) if self.static else d.node.expr
        if expr.is_number:
            return int(expr)
        return self.dim_names.get(expr, UNKNOWN)

    # ---- emission -----------------------------------------------------------------------
    def emit(self, op: str, inputs: Sequence[Value | None], attrs: dict[str, Any] | None = None) -> list[Value]:
        """Add an Ember node named after the current FX node (or the constants it folds to)."""
        return add_or_fold(self.graph, op, inputs, attrs, node_name(self.node) if self.node is not None else op)

    def emit1(self, op: str, inputs: Sequence[Value | None], attrs: dict[str, Any] | None = None) -> Value:
        return self.emit(op, inputs, attrs)[0]

    def int_array(self, values: Sequence[int], name: str = "shape") -> Value:
        return self.graph.add_constant(np.asarray(values, dtype=np.int64), name)

    def shape_tensor(self, dims: Sequence) -> Value:
        """A 1-D i64 shape for traced sizes; a dynamic input's dim is read from that input at run time."""
        pieces = []
        for d in dims:
            e = self.dim(d)
            if isinstance(e, int):
                pieces.append(self.int_array([e]))
                continue
            expr = d.node.expr
            if expr not in self.sources:
                raise EmberError(
                    f"size {expr} is computed from dynamic dims at run time",
                    hint="export with static shapes or pass input_shapes",
                )
            v, axis = self.sources[expr]
            pieces.append(self.emit1("shape", [v], {"start": axis, "end": axis + 1}))
        return self.emit1("concat", pieces, {"axis": 0})

    def cast(self, v: Value, dtype: str) -> Value:
        return v if v.dtype == dtype else self.emit1("cast", [v], {"to": dtype})
