"""The op registry: each op is declared once with its operands, attributes, type inference
and numpy reference semantics."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.errors import EmberError

REQUIRED = object()
ATTR_KINDS = ("int", "float", "ints", "floats", "str", "dtype")


@dataclass(frozen=True)
class Attr:
    """An attribute's kind and default (REQUIRED when it has none)."""

    kind: str
    default: Any = REQUIRED


def _attr_from_default(default: Any) -> Attr:
    if isinstance(default, Attr):
        return default
    if isinstance(default, bool) or isinstance(default, int):
        return Attr("int", int(default))
    if isinstance(default, float):
        return Attr("float", default)
    if isinstance(default, str):
        return Attr("str", default)
    if isinstance(default, tuple) and all(isinstance(x, int) for x in default):
        return Attr("ints", default)
    if isinstance(default, tuple):
        return Attr("floats", tuple(float(x) for x in default))
    raise TypeError(f"cannot infer attribute kind from default {default!r}")


def coerce_attr(name: str, kind: str, value: Any) -> Any:
    """Normalize an attribute value to its kind (tuples for lists), or raise EmberError."""
    try:
        if kind == "int":
            if isinstance(value, (float, np.floating)) and not float(value).is_integer():
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "ints":
            return tuple(int(v) for v in np.asarray(value).reshape(-1).tolist())
        if kind == "floats":
            return tuple(float(v) for v in np.asarray(value).reshape(-1).tolist())
        if kind in ("str", "dtype"):
            if not isinstance(value, str):
                raise ValueError
            if kind == "dtype":
                from ember.ir.dtypes import DTYPES

                if value not in DTYPES:
                    raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    raise EmberError(f"attribute '{name}' expects {kind}, got {value!r}")


@dataclass
class OpSchema:
    """Declaration of one Ember op.

    `inputs` names operands; a trailing `?` marks an optional one and `*` a variadic tail.
    `infer(inputs, attrs)` returns one `(shape, dtype)` per output; `reference(*arrays, attrs)`
    computes the outputs with numpy (a single array or a list of arrays).
    """

    name: str
    inputs: tuple[str, ...]
    attrs: dict[str, Attr]
    doc: str
    infer: Callable
    reference: Callable | None = None
    decompose: Callable | None = None
    tags: frozenset[str] = field(default_factory=frozenset)

    @property
    def min_inputs(self) -> int:
        return sum(1 for i in self.inputs if not i.endswith(("?", "*")))

    @property
    def max_inputs(self) -> int | None:
        return None if any(i.endswith("*") for i in self.inputs) else len(self.inputs)

    def check_arity(self, n: int) -> None:
        hi = self.max_inputs
        if n < self.min_inputs or (hi is not None and n > hi):
            want = f"{self.min_inputs}" if hi == self.min_inputs else f"{self.min_inputs}..{hi or 'n'}"
            raise EmberError(f"expects {want} operands ({', '.join(self.inputs)}), got {n}")

    def complete_attrs(self, given: dict[str, Any]) -> dict[str, Any]:
        """Check attribute names and kinds, fill defaults, and normalize values."""
        unknown = sorted(set(given) - set(self.attrs))
        if unknown:
            raise EmberError(
                f"unknown attribute '{unknown[0]}' for op '{self.name}'",
                hint=f"known: {', '.join(self.attrs) or 'none'}",
            )
        out = {}
        for name, spec in self.attrs.items():
            if name in given and given[name] is not None:
                out[name] = coerce_attr(name, spec.kind, given[name])
            elif spec.default is REQUIRED:
                raise EmberError(f"missing required attribute '{name}'")
            else:
                out[name] = spec.default
        return out

    def infer_types(self, inputs: list, attrs: dict[str, Any]) -> list[tuple[tuple, str]]:
        result = self.infer(inputs, attrs)
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], str):
            return [(tuple(result[0]), result[1])]
        return [(tuple(s), d) for s, d in result]

    def evaluate(self, arrays: Sequence[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
        if self.reference is None:
            raise EmberError(f"op '{self.name}' has no reference implementation")
        arrays = list(arrays)
        if self.max_inputs is not None:
            arrays += [None] * (self.max_inputs - len(arrays))
        out = self.reference(*arrays, attrs)
        return list(out) if isinstance(out, (list, tuple)) else [out]


_REGISTRY: dict[str, OpSchema] = {}


def op(name: str, inputs: str, doc: str, *, tags: Sequence[str] = (), **attrs: Any):
    """Declare an op: decorates its type-inference function and returns the OpSchema.

    Attach the numpy reference with `@schema.ref`-style: `schema.reference = fn` via `reference_of`.
    """

    def wrap(infer: Callable) -> OpSchema:
        schema = OpSchema(
            name=name,
            inputs=tuple(inputs.split()),
            attrs={k: _attr_from_default(v) for k, v in attrs.items()},
            doc=doc,
            infer=infer,
            tags=frozenset(tags),
        )
        if name in _REGISTRY:
            raise ValueError(f"op '{name}' registered twice")
        _REGISTRY[name] = schema
        return schema

    return wrap


def reference(schema: OpSchema):
    """Attach a numpy reference implementation to an op declared with `op`."""

    def wrap(fn: Callable) -> Callable:
        schema.reference = fn
        return fn

    return wrap


def decomposition(schema: OpSchema):
    """Attach `expand(node, emit) -> Value` to a composite op: it rebuilds the node from primitive ops, where
    `emit(op, *inputs, **attrs)` makes one (a numpy array as an input becomes a constant)."""

    def wrap(fn: Callable) -> Callable:
        schema.decompose = fn
        return fn

    return wrap


def get_schema(name: str) -> OpSchema:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else None
        raise EmberError(f"unknown op '{name}'", op=name, hint=hint) from None


def all_schemas() -> dict[str, OpSchema]:
    return dict(_REGISTRY)
