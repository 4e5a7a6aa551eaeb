"""Reading an ONNX file (safely, external data included) and building Ember IR from it."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.fold import add_or_fold
from ember.ir.graph import Graph, Value

MAX_NODES = 1_000_000


def read_model(path: str | os.PathLike, mapped: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Parse an ONNX file; external data is read only from inside the model's folder. With a `mapped` dict,
    the graph's external initializers stay in their files: read-only memory maps of them land in `mapped` by
    name instead of copies in the proto (a model with 1 GB of weights then takes 1 GB, not 2-3)."""
    p = Path(path)
    if not p.exists():
        raise EmberError("no such file", file=str(path))
    if not p.is_file():
        raise EmberError("not a file", file=str(path))
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises several unrelated types on garbage
        if "MaxDepth" in str(e) or isinstance(e, RecursionError):
            raise EmberError(
                "graphs are nested too deeply to read (protobuf allows 100 levels)", file=str(path)
            ) from None
        raise EmberError(f"not a readable ONNX model ({type(e).__name__}: {str(e)[:120]})", file=str(path)) from None
    if not model.HasField("graph") or not model.graph.node and not model.graph.output:
        raise EmberError("not an ONNX model: it has no graph", file=str(path))
    _load_external_data(model, p.parent.resolve(), str(path), mapped)
    return model


def _load_external_data(model: onnx.ModelProto, base: Path, file: str, mapped: dict | None) -> None:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    mappable = list(model.graph.initializer) if mapped is not None else []  # held: their ids stay theirs
    ids = {id(t) for t in mappable}
    for tensor in mappable + list(_get_all_tensors(model)):
        if not uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        loc = info.get("location", "")
        target = (base / loc).resolve()
        if base not in target.parents:
            raise EmberError(
                f"tensor '{tensor.name}' names external data '{loc}' outside the model's folder", file=file
            )
        if not target.is_file():
            raise EmberError(f"external data file '{loc}' of tensor '{tensor.name}' is missing", file=file)
        offset, length = int(info.get("offset", 0) or 0), info.get("length")
        size = target.stat().st_size
        length = size - offset if length is None else int(length)
        if offset < 0 or length < 0 or offset + length > size:
            raise EmberError(
                f"tensor '{tensor.name}' declares {length} bytes at offset {offset} of '{loc}', which holds {size}",
                file=file,
            )
        array = _mapped(tensor, target, offset, length) if id(tensor) in ids else None
        if array is not None:
            mapped[tensor.name] = array  # the proto keeps the tensor's dims, and no data
        else:
            with open(target, "rb") as f:
                f.seek(offset)
                tensor.raw_data = f.read(length)
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def _mapped(tensor: onnx.TensorProto, target: Path, offset: int, length: int) -> np.ndarray | None:
    """A read-only memory map of an external tensor, or None when its bytes cannot simply be viewed (a
    length that does not match the dims, an exotic element type, a big-endian host, no data)."""
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except (KeyError, TypeError, ValueError):
        return None
    shape = tuple(int(d) for d in tensor.dims)
    if dtype.kind not in "biuf" or sys.byteorder != "little" or not 0 < length == np.prod(shape) * dtype.itemsize:
        return None
    return np.memmap(target, dtype=dtype, mode="r", offset=offset, shape=shape)


def _np_dtype_name(t) -> str:
    try:
        return dtypes.from_numpy(t)
    except EmberError:
        raise EmberError(f"unsupported element type {t}") from None


def _has_nan(arr: np.ndarray, chunk: int = 1 << 22) -> bool:
    """Whether a float array holds NaN, checked in slices so a large weight needs no full-size mask."""
    if arr.dtype.kind not in "fc":
        return False
    flat = arr.reshape(-1)
    return any(np.isnan(flat[i : i + chunk]).any() for i in range(0, flat.size, chunk))


class Importer:
    """Maps a graphsurgeon graph onto an Ember Graph, folding what is known at import time (within the
    size cap of the enclosing `fold_scope`)."""

    def __init__(self, file: str, opset: int, external: dict[str, np.ndarray] | None = None):
        self.file = file
        self.opset = opset
        self.external = external or {}
        self.graph = Graph()
        self.values: dict[str, Value] = {}
        self.read: set[str] = set()  # the tensor names some node or graph output reads
        self.node: gs.Node | None = None

    # ---- operands -----------------------------------------------------------------------
    def inp(self, n: gs.Node, i: int) -> Value | None:
        """Operand i of an ONNX node, or None when it is absent."""
        if i >= len(n.inputs) or n.inputs[i].name == "":
            return None
        t = n.inputs[i]
        if t.name not in self.values:
            if isinstance(t, gs.Constant):
                try:
                    arr = self.external[t.name] if t.name in self.external else np.asarray(t.values)
                except (ValueError, TypeError) as e:
                    raise EmberError(f"initializer '{t.name}' is unreadable ({e})") from None
                if _has_nan(arr):
                    raise EmberError(
                        f"initializer '{t.name}' holds NaN values", hint="re-export the model with finite weights"
                    )
                self.values[t.name] = self.graph.add_constant(arr, self._cname(t.name))
            else:
                raise EmberError(f"operand '{t.name}' is not produced by any node or graph input")
        return self.values[t.name]

    def ins(self, n: gs.Node) -> list[Value | None]:
        return [self.inp(n, i) for i in range(len(n.inputs))]

    def const(self, n: gs.Node, i: int, what: str | None = None) -> np.ndarray | None:
        """The constant value of operand i (None if absent); error if present but computed."""
        v = self.inp(n, i)
        if v is None:
            return None
        if not v.is_const:
            raise EmberError(f"{what or f'operand {i}'} must be a constant (it is computed at run time)")
        return v.const

    def ints(self, n: gs.Node, i: int, what: str | None = None) -> list[int] | None:
        c = self.const(n, i, what)
        return None if c is None else [int(x) for x in np.asarray(c).reshape(-1)]

    def _cname(self, name: str) -> str:
        return self.graph.unique_name(name or "c")

    # ---- emission -----------------------------------------------------------------------
    def emit(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any] | None = None,
        outputs: Sequence[str] | None = None,
    ) -> list[Value]:
        """Add an Ember node (or the constants it folds to); `outputs` name the results."""
        names = list(outputs or [])
        base = self.node.name if self.node is not None and self.node.name else (names[0] if names else op)
        return add_or_fold(
            self.graph, op, inputs, attrs, base, names, lambda i: self._cname(names[i] if i < len(names) else op)
        )

    def emit1(
        self, op: str, inputs: Sequence[Value | None], attrs: dict[str, Any] | None = None, name: str | None = None
    ) -> Value:
        return self.emit(op, inputs, attrs, [name] if name else None)[0]

    def int_array(self, values, name: str = "shape") -> Value:
        """An i64 constant (a shape, axes, bounds): the torch importer's helper of the same name."""
        return self.graph.add_constant(np.asarray(values, dtype=np.int64), name)

    def scalar(self, value: float, like: Value) -> Value:
        return self.graph.add_constant(np.asarray(value, dtype=dtypes.to_numpy(like.dtype)), "scalar")


def apply_input_shapes(graph: gs.Graph, shapes: Mapping[str, Sequence[int]], file: str) -> None:
    """Replace the declared shapes of graph inputs with user-given static ones."""
    by_name = {t.name: t for t in graph.inputs}
    for name, shape in shapes.items():
        if name not in by_name:
            raise EmberError(
                f"--input-shape names '{name}', which is not a graph input",
                file=file,
                hint=f"inputs: {', '.join(by_name) or 'none'}",
            )
        t = by_name[name]
        if t.shape is not None and len(t.shape) != len(shape):
            raise EmberError(
                f"--input-shape gives {len(shape)} dims for '{name}', which has rank {len(t.shape)} ({list(t.shape)})",
                file=file,
            )
        for want, have in zip(shape, t.shape or []):
            if isinstance(have, int) and have > 0 and have != want:
                raise EmberError(f"--input-shape gives '{name}' dim {want} where the model fixes {have}", file=file)
        t.shape = [int(d) for d in shape]


def input_dims(t: gs.Variable) -> list:
    if t.shape is None:
        raise EmberError(f"graph input '{t.name}' has no shape", hint=f"pass --input-shape {t.name}:d0,d1,...")
    dims = []
    for i, d in enumerate(t.shape):
        if isinstance(d, int) and d > 0:
            dims.append(d)
        elif isinstance(d, str) and d.isidentifier():
            dims.append(d)
        else:
            dims.append(f"{''.join(c if c.isalnum() else '_' for c in t.name)}_d{i}")
    return dims
