"""Evaluating nodes whose operands are all known at compile time (shared by frontends and passes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.ir.graph import Value
from ember.ir.ops import get_schema

DEFAULT_FOLD_LIMIT = 64 << 20  # bytes per folded tensor


def fold(
    op: str, inputs: Sequence[Value | None], attrs: dict[str, Any], types, limit: int = DEFAULT_FOLD_LIMIT
) -> list[np.ndarray] | None:
    """The outputs of `op` when they can be computed now and each fits in `limit` bytes, else None.

    `shape` of a statically shaped value folds even though its operand is not a constant.
    """
    from ember.ir import dtypes

    for shape, dtype in types:
        if not all(isinstance(d, int) for d in shape):
            return None
        if int(np.prod(shape, dtype=np.int64)) * dtypes.to_numpy(dtype).itemsize > limit:
            return None
    if op == "shape" and inputs[0] is not None and inputs[0].is_static:
        return [np.array(inputs[0].shape[attrs["start"] : attrs["end"]], dtype=np.int64)]
    if not all(v is None or v.is_const for v in inputs):
        return None
    schema = get_schema(op)
    if schema.reference is None:
        return None
    with np.errstate(all="ignore"):
        arrays = schema.evaluate([None if v is None else v.const for v in inputs], attrs)
    return [np.asarray(a, dtype=dtypes.to_numpy(t[1])).reshape(t[0]) for a, t in zip(arrays, types)]
