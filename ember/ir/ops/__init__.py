"""Ember's ops, one module per family; importing this package registers them all."""

from ember.ir.ops import (  # noqa: F401  (registration)
    elementwise,
    fused,
    indexing,
    nn,
    quant,
    recurrent,
    reduce,
    sparse,
    tensor,
    volume,
)
from ember.ir.ops.registry import REQUIRED, Attr, OpSchema, all_schemas, get_schema, op, reference

__all__ = ["REQUIRED", "Attr", "OpSchema", "all_schemas", "get_schema", "op", "reference"]
