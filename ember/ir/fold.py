"""Evaluating nodes whose operands are all known at compile time (shared by frontends and passes), within a
per-tensor size cap that `fold_scope` sets for a whole import or compile."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.errors import EmberError
from ember.ir.graph import Graph, Value
from ember.ir.ops import get_schema

DEFAULT_FOLD_LIMIT = 64 << 20  # bytes per folded tensor
log = logging.getLogger("ember")


@dataclass(frozen=True)
class FoldSkip:
    """A fold left undone because one of its results would be larger than the cap."""

    stage: str  # "import" or the pass that tried it
    node: str
    op: str
    nbytes: int
    limit: int


@dataclass
class FoldScope:
    """The cap folds obey inside a `fold_scope` block, and the folds they skipped there."""

    limit: int
    parent: FoldScope | None = None
    skipped: list[FoldSkip] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def record(self, skip: FoldSkip) -> bool:
        """Add `skip` here and in the enclosing scopes, once per node; whether it was new here."""
        new = (skip.node, skip.op) not in self._seen
        scope: FoldScope | None = self
        while scope is not None:
            if (skip.node, skip.op) not in scope._seen:
                scope._seen.add((skip.node, skip.op))
                scope.skipped.append(skip)
            scope = scope.parent
        return new


_SCOPE: ContextVar[FoldScope | None] = ContextVar("ember_fold_scope", default=None)


@contextmanager
def fold_scope(limit: int | str | None = None) -> Iterator[FoldScope]:
    """Within the block, folded tensors hold at most `limit` bytes (None: the enclosing block's limit, or
    64 MiB outside any); folds skipped for size are recorded here and in the enclosing blocks."""
    parent = _SCOPE.get()
    scope = FoldScope(current_limit() if limit is None else parse_size(limit), parent)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def current_limit() -> int:
    scope = _SCOPE.get()
    return DEFAULT_FOLD_LIMIT if scope is None else scope.limit


_UNITS = {"": 1, "b": 1}
for _power, _prefix in enumerate("kmgt", start=1):
    _UNITS.update({_prefix: 1024**_power, _prefix + "i": 1024**_power, _prefix + "ib": 1024**_power})
    _UNITS[_prefix + "b"] = 1000**_power
_SIZE = re.compile(r"(\d+\.?\d*|\.\d+)\s*([a-z]*)")


def parse_size(value: int | str, what: str = "fold limit") -> int:
    """Bytes from an int or a size such as '512k', '64MiB' or '1.5GB' (k, M, G, T and KiB, MiB, GiB, TiB
    count in 1024s; kB, MB, GB, TB in 1000s)."""
    if isinstance(value, (int, np.integer)):
        if value >= 0:
            return int(value)
    else:
        m = _SIZE.fullmatch(str(value).strip().lower())
        if m and m[2] in _UNITS:
            number = float(m[1]) if "." in m[1] else int(m[1])
            return int(number * _UNITS[m[2]])
    raise EmberError(f"bad {what} '{value}'", hint="give bytes or a size such as 512k, 64MiB or 1GiB")


def format_size(nbytes: int) -> str:
    """'128 MiB', '1.5 KiB', '12 B'."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{nbytes} B"


def fold(
    op: str,
    inputs: Sequence[Value | None],
    attrs: dict[str, Any],
    types,
    limit: int | None = None,
    *,
    node: str | None = None,
    stage: str = "fold",
) -> list[np.ndarray] | None:
    """The outputs of `op` when they can be computed now and each fits in `limit` bytes (None: the fold
    scope's), else None. Results of one element always fit. Given the `node` name, a fold skipped for
    its size is recorded and logged, and NaN or Inf that folding creates is warned about.

    `shape` of a statically shaped value folds even though its operand is not a constant.
    """
    from ember.ir import dtypes

    if not all(isinstance(d, int) for shape, _ in types for d in shape):
        return None
    static_shape = op == "shape" and inputs[0] is not None and inputs[0].is_static
    schema = get_schema(op)
    if not static_shape and (schema.reference is None or not all(v is None or v.is_const for v in inputs)):
        return None
    limit = current_limit() if limit is None else limit
    counts = [int(np.prod(shape, dtype=np.int64)) for shape, _ in types]
    sizes = [n * dtypes.to_numpy(dtype).itemsize for n, (_, dtype) in zip(counts, types)]
    over = [size for n, size in zip(counts, sizes) if n > 1 and size > limit]
    if over:
        if node is not None:
            _record_skip(FoldSkip(stage, node, op, max(over), limit))
        return None
    if static_shape:
        return [np.array(inputs[0].shape[attrs["start"] : attrs["end"]], dtype=np.int64)]
    with np.errstate(all="ignore"):
        arrays = schema.evaluate([None if v is None else v.const for v in inputs], attrs)
    values = [np.asarray(a, dtype=dtypes.to_numpy(t[1])).reshape(t[0]) for a, t in zip(arrays, types)]
    if node is not None and _creates_non_finite(inputs, values):
        log.warning("%s: node '%s' (%s) folds to a tensor holding NaN or Inf", stage, node, op)
    return values


def _record_skip(skip: FoldSkip) -> None:
    scope = _SCOPE.get()
    if scope is None or scope.record(skip):
        log.info(
            "%s: not folding node '%s' (%s): its %s result is over the %s cap",
            skip.stage,
            skip.node,
            skip.op,
            format_size(skip.nbytes),
            format_size(skip.limit),
        )


def _creates_non_finite(inputs: Sequence[Value | None], values: list[np.ndarray]) -> bool:
    """Whether a folded result holds NaN or Inf that none of its float operands held (a -inf mask is fine)."""
    if all(a.dtype.kind != "f" or np.isfinite(a).all() for a in values):
        return False
    consts = [np.asarray(v.const) for v in inputs if v is not None and v.is_const]
    return all(c.dtype.kind != "f" or np.isfinite(c).all() for c in consts)


def add_or_fold(
    graph: Graph,
    op: str,
    inputs: Sequence[Value | None],
    attrs: dict[str, Any] | None,
    name: str,
    output_names: Sequence[str] | None = None,
    constant_name: Callable[[int], str] | None = None,
) -> list[Value]:
    """What a frontend emits for one op: its node named `name`, or the constants it folds to at import
    (named by `constant_name(i)`, else `name`). Trailing absent operands are dropped first."""
    schema = get_schema(op)
    inputs = list(inputs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    attrs = schema.complete_attrs(attrs or {})
    schema.check_arity(len(inputs))
    folded = fold(op, inputs, attrs, schema.infer_types(inputs, attrs), node=name, stage="import")
    if folded is not None:
        return [graph.add_constant(arr, constant_name(i) if constant_name else name) for i, arr in enumerate(folded)]
    return graph.add_node(op, inputs, attrs, name=name, output_names=output_names).outputs
