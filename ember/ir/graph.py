"""Ember IR: a Graph of Nodes connected by Values, with use lists kept by the IR itself."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from typing import Any

import networkx as nx
import numpy as np

from ember.errors import EmberError
from ember.ir import dtypes

Dim = int | str
Shape = tuple[Dim, ...]

_NAME_OK = re.compile(r"^[A-Za-z0-9_.:/\-]+$")


class Value:
    """An SSA value: produced by one node, a graph input, or a constant holding a numpy array."""

    __slots__ = ("name", "shape", "dtype", "producer", "const", "uses")

    def __init__(self, name: str, shape: Sequence[Dim], dtype: str, const: np.ndarray | None = None):
        self.name = name
        self.shape: Shape = tuple(shape)
        self.dtype = dtype
        self.producer: Node | None = None
        self.const = const
        self.uses: list[tuple[Node, int]] = []

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def users(self) -> list[Node]:
        """Nodes that read this value, each once, in use order."""
        return list(dict.fromkeys(n for n, _ in self.uses))

    def __repr__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        sigil = "@" if self.is_const else "%"
        return f"{sigil}{self.name}: {self.dtype}[{dims}]"


class Node:
    """One operation: `op` names a registered schema; inputs may hold None for absent optional ones."""

    __slots__ = ("op", "name", "inputs", "outputs", "attrs", "graph")

    def __init__(self, op: str, name: str, attrs: dict[str, Any]):
        self.op = op
        self.name = name
        self.attrs = attrs
        self.inputs: list[Value | None] = []
        self.outputs: list[Value] = []
        self.graph: Graph | None = None

    @property
    def output(self) -> Value:
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"<Node {self.name}: {self.op}>"


class Graph:
    """A function of tensors: inputs, constants, nodes in execution order, and outputs."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self._values: dict[str, Value] = {}
        self._node_names: set[str] = set()
        self._counter = itertools.count()

    # ---- construction -------------------------------------------------------------------
    def unique_name(self, base: str, taken: Iterable[str] | None = None) -> str:
        """A value or node name not used in this graph, derived from `base`."""
        used = self._values if taken is None else taken
        base = base or "v"
        if base not in used:
            return base
        while True:
            cand = f"{base}_{next(self._counter)}"
            if cand not in used:
                return cand

    def _new_value(self, name: str, shape: Sequence[Dim], dtype: str, const=None) -> Value:
        if name in self._values:
            raise EmberError(f"duplicate value name '{name}'")
        v = Value(name, shape, dtype, const)
        self._values[name] = v
        return v

    def add_input(self, name: str, shape: Sequence[Dim], dtype: str = "f32") -> Value:
        v = self._new_value(name, shape, dtype)
        self.inputs.append(v)
        return v

    def add_constant(self, array: Any, name: str | None = None, dtype: str | None = None) -> Value:
        """Add a constant; `array` is converted with numpy (dtype given as Ember name if set)."""
        arr = np.asarray(array, dtype=dtypes.to_numpy(dtype) if dtype else None)
        if dtype is None:
            arr = np.asarray(arr, dtype=np.dtype(arr.dtype))
        return self._new_value(self.unique_name(name or "c"), arr.shape, dtypes.from_numpy(arr.dtype), arr)

    def add_node(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any] | None = None,
        name: str | None = None,
        output_names: Sequence[str] | None = None,
        before: Node | None = None,
    ) -> Node:
        """Create a node, infer its output types, and insert it (at the end or before `before`)."""
        from ember.ir.ops import get_schema

        schema = get_schema(op)
        node = Node(op, self.unique_name(name or op, self._node_names), {})
        try:
            node.attrs = schema.complete_attrs(attrs or {})
            schema.check_arity(len(inputs))
            types = schema.infer_types(list(inputs), node.attrs)
        except EmberError as e:
            if e.node is None:
                e.node, e.op = node.name, op
            raise EmberError(e.message, file=e.file, node=e.node, op=e.op, hint=e.hint) from None
        self._node_names.add(node.name)
        for i, v in enumerate(inputs):
            node.inputs.append(v)
            if v is not None:
                v.uses.append((node, i))
        names = list(output_names or [])
        for i, (shape, dtype) in enumerate(types):
            base = names[i] if i < len(names) else (node.name if len(types) == 1 else f"{node.name}.{i}")
            out = self._new_value(self.unique_name(base), shape, dtype)
            out.producer = node
            node.outputs.append(out)
        node.graph = self
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(before), node)
        return node

    def emit(self, op: str, *inputs: Value | None, name: str | None = None, **attrs: Any) -> Value:
        """Shorthand for a single-output node: `g.emit("relu", x)`."""
        return self.add_node(op, list(inputs), attrs, name=name).output

    # ---- queries ------------------------------------------------------------------------
    def value(self, name: str) -> Value:
        try:
            return self._values[name]
        except KeyError:
            raise EmberError(f"no value named '{name}' in graph '{self.name}'") from None

    def has_value(self, name: str) -> bool:
        return name in self._values

    @property
    def values(self) -> list[Value]:
        return list(self._values.values())

    @property
    def constants(self) -> list[Value]:
        """Constants that are still referenced (by a node or as an output), in creation order."""
        outs = {id(v) for v in self.outputs}
        return [v for v in self._values.values() if v.is_const and (v.uses or id(v) in outs)]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise EmberError(f"no node named '{name}' in graph '{self.name}'")

    def to_networkx(self) -> nx.MultiDiGraph:
        """Node-level dataflow graph: an edge producer -> user for every value read."""
        g = nx.MultiDiGraph()
        for n in self.nodes:
            g.add_node(n.name, op=n.op)
        for n in self.nodes:
            for v in n.inputs:
                if v is not None and v.producer is not None:
                    g.add_edge(v.producer.name, n.name, value=v.name)
        return g

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def is_output(self, value: Value) -> bool:
        """Whether `value` is one of the graph's outputs."""
        return any(o is value for o in self.outputs)

    # ---- mutation -----------------------------------------------------------------------
    def can_replace(self, old: Value, new: Value) -> bool:
        """Whether `replace_all_uses(old, new)` keeps the graph's output names: a graph output can only
        be replaced by a value that may take over its name (not an input, not another output)."""
        if not self.is_output(old):
            return True
        return not any(v is new for v in self.inputs) and not any(v is new for v in self.outputs)

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Point every reader of `old` at `new`; a graph output passes its name on to `new`."""
        if old is new:
            return
        if not self.can_replace(old, new):
            raise EmberError(f"cannot replace graph output '{old.name}' by input or output '{new.name}'")
        for node, i in old.uses:
            node.inputs[i] = new
            new.uses.append((node, i))
        old.uses = []
        if self.is_output(old):
            name = old.name
            self.rename_value(old, self.unique_name(name + ".replaced"))
            self.rename_value(new, name)
            self.outputs = [new if o is old else o for o in self.outputs]

    def set_input(self, node: Node, index: int, value: Value | None) -> None:
        old = node.inputs[index]
        if old is not None:
            old.uses = [(n, i) for n, i in old.uses if not (n is node and i == index)]
        node.inputs[index] = value
        if value is not None:
            value.uses.append((node, index))

    def remove_node(self, node: Node) -> None:
        """Remove a node whose outputs nobody reads."""
        for out in node.outputs:
            if out.uses or self.is_output(out):
                raise EmberError(f"cannot remove node '{node.name}': output '{out.name}' is still used")
        for i in range(len(node.inputs)):
            self.set_input(node, i, None)
        self.nodes.remove(node)
        self._node_names.discard(node.name)
        for out in node.outputs:
            self._values.pop(out.name, None)
        node.graph = None

    def drop_unused_constants(self) -> int:
        outs = {id(v) for v in self.outputs}
        dead = [n for n, v in self._values.items() if v.is_const and not v.uses and id(v) not in outs]
        for n in dead:
            del self._values[n]
        return len(dead)

    def rename_value(self, value: Value, name: str) -> None:
        if name == value.name:
            return
        if name in self._values:
            raise EmberError(f"duplicate value name '{name}'")
        del self._values[value.name]
        value.name = name
        self._values[name] = value

    def reclaim_names(self, keep: set[str]) -> int:
        """Rename nodes and values whose names are not in `keep` (names that existed before a rewrite) and
        that the rewrite called `base_N` (because `base` was taken then) back to `base` where that name is
        free again; graph outputs keep their names. Returns how many were renamed."""
        renamed = 0
        outputs = {id(v) for v in self.outputs}
        for node in self.nodes:
            if node.name in keep:
                continue
            m = re.fullmatch(r"(.+)_\d+", node.name)
            if m and m.group(1) not in self._node_names:
                self._node_names.discard(node.name)
                node.name = m.group(1)
                self._node_names.add(node.name)
                renamed += 1
            for out in node.outputs:
                m = re.fullmatch(r"(.+)_\d+", out.name)
                if m and out.name not in keep and id(out) not in outputs and m.group(1) not in self._values:
                    self.rename_value(out, m.group(1))
                    renamed += 1
        return renamed

    def reinfer(self) -> bool:
        """Re-run type inference over all nodes (after operands became constants); returns whether any
        output type changed."""
        from ember.ir.ops import get_schema

        changed = False
        for node in self.nodes:
            try:
                types = get_schema(node.op).infer_types(list(node.inputs), node.attrs)
            except EmberError as e:
                raise EmberError(e.message, node=node.name, op=node.op, hint=e.hint) from None
            for out, (shape, dtype) in zip(node.outputs, types):
                if (out.shape, out.dtype) != (tuple(shape), dtype):
                    out.shape, out.dtype = tuple(shape), dtype
                    changed = True
        return changed

    def sort(self) -> None:
        """Put nodes in a topological order, keeping the current order where it is already valid."""
        index = {n.name: i for i, n in enumerate(self.nodes)}
        g = self.to_networkx()
        try:
            order = list(nx.lexicographical_topological_sort(g, key=index.__getitem__))
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(g)
            raise EmberError(f"graph has a cycle through node '{cycle[0][0]}'", node=cycle[0][0]) from None
        by_name = {n.name: n for n in self.nodes}
        self.nodes = [by_name[n] for n in order]

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, {len(self.outputs)} outputs>"
