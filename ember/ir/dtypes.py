"""Ember's element types: short names (f32, i64, ...) and their numpy equivalents."""

from __future__ import annotations

import numpy as np

from ember.errors import EmberError

_TO_NUMPY = {
    "f16": np.float16,
    "f32": np.float32,
    "f64": np.float64,
    "i8": np.int8,
    "i16": np.int16,
    "i32": np.int32,
    "i64": np.int64,
    "u8": np.uint8,
    "u16": np.uint16,
    "u32": np.uint32,
    "u64": np.uint64,
    "bool": np.bool_,
}
_FROM_NUMPY = {np.dtype(v): k for k, v in _TO_NUMPY.items()}

# TVM spells dtypes out in full.
_TO_TVM = {
    "f16": "float16",
    "f32": "float32",
    "f64": "float64",
    "i8": "int8",
    "i16": "int16",
    "i32": "int32",
    "i64": "int64",
    "u8": "uint8",
    "u16": "uint16",
    "u32": "uint32",
    "u64": "uint64",
    "bool": "bool",
}

DTYPES = tuple(_TO_NUMPY)


def to_numpy(dtype: str) -> np.dtype:
    """numpy dtype for an Ember dtype name."""
    try:
        return np.dtype(_TO_NUMPY[dtype])
    except KeyError:
        raise EmberError(f"unknown dtype '{dtype}'", hint=f"known: {', '.join(DTYPES)}") from None


def from_numpy(dtype: np.dtype | type) -> str:
    """Ember dtype name for a numpy dtype."""
    try:
        return _FROM_NUMPY[np.dtype(dtype)]
    except KeyError:
        raise EmberError(f"unsupported element type {np.dtype(dtype)}") from None


def to_tvm(dtype: str) -> str:
    """TVM's spelling of an Ember dtype."""
    return _TO_TVM[dtype]


def is_float(dtype: str) -> bool:
    return dtype.startswith("f")
