"""Declarative pattern rewriting: match an op tree with bindings and constraints, build the replacement.

    conv = P.op("conv2d", P.any("x"), P.const("w"), P.opt(P.const("b")), name="conv")
    rule = Rule(P.op("mul", conv, P.const("s")), build=fold_mul, where=lambda m: m["s"].const.size == 1)
    changed = rewrite(graph, [rule])

A match maps binding names to Values (for `any`/`const`) or Nodes (for `op`). `build(m, b)` makes the
replacement with the Builder `b` (nodes go right before the matched root) and returns the Value that
replaces the root's output, or None to decline. Matched interior nodes must have no other readers
unless their pattern says `shared=True`; nodes left unused after a rewrite are removed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.ir.graph import Graph, Node, Value


@dataclass(frozen=True)
class Pattern:
    kind: str  # "op", "any", "const", "opt"
    name: str | None = None
    ops: tuple[str, ...] = ()
    operands: tuple[Pattern, ...] = ()
    attrs: tuple[tuple[str, Any], ...] = ()
    where: Callable | None = None
    shared: bool = False
    commute: bool = False


class P:
    """Pattern constructors."""

    @staticmethod
    def op(
        op: str | Sequence[str],
        *operands: Pattern,
        name: str | None = None,
        where: Callable | None = None,
        shared: bool = False,
        commute: bool = False,
        **attrs: Any,
    ) -> Pattern:
        """A node whose op is `op` (or one of several), whose operands match `operands` in order (either
        order of two when `commute`), and whose attributes equal `attrs`; `where(node)` adds any other
        constraint. `shared` lets an interior node have readers outside the pattern (it then survives)."""
        ops = (op,) if isinstance(op, str) else tuple(op)
        return Pattern("op", name, ops, tuple(operands), tuple(sorted(attrs.items())), where, shared, commute)

    @staticmethod
    def any(name: str | None = None, where: Callable | None = None) -> Pattern:
        """Any value; `where(value)` may constrain it."""
        return Pattern("any", name, where=where)

    @staticmethod
    def const(name: str | None = None, where: Callable | None = None) -> Pattern:
        """A constant value; `where(array)` may constrain its contents."""
        return Pattern("const", name, where=where)

    @staticmethod
    def scalar(name: str | None = None, value: float | None = None, rtol: float = 1e-5) -> Pattern:
        """A one-element constant, equal to `value` within `rtol` when given."""

        def ok(a: np.ndarray) -> bool:
            if a.size != 1:
                return False
            return value is None or abs(float(a.reshape(-1)[0]) - value) <= rtol * max(1.0, abs(value))

        return Pattern("const", name, where=ok)

    @staticmethod
    def opt(inner: Pattern) -> Pattern:
        """An operand that may be absent (bound to None) or match `inner`."""
        return Pattern("opt", inner.name, operands=(inner,))


class Match(dict):
    """Binding name -> Value or Node; `nodes` lists the matched nodes, root first."""

    def __init__(self):
        super().__init__()
        self.nodes: list[Node] = []


def _match(pat: Pattern, value: Value | None, m: Match, root: bool) -> bool:
    if pat.kind == "opt":
        if value is None:
            if pat.name:
                m[pat.name] = None
            return True
        return _match(pat.operands[0], value, m, root)
    if value is None:
        return False
    if pat.kind == "any":
        ok = pat.where is None or pat.where(value)
    elif pat.kind == "const":
        ok = value.is_const and (pat.where is None or bool(pat.where(value.const)))
    else:
        node = value.producer
        if pat.name and pat.name in m:  # the same op bound twice: it must be the same node
            return m[pat.name] is node
        ok = node is not None and node.op in pat.ops and _match_node(pat, node, value, m, root)
        if ok and pat.name:
            m[pat.name] = node
        return ok
    if ok and pat.name:
        if pat.name in m and m[pat.name] is not value:
            return False
        m[pat.name] = value
    return ok


def _match_node(pat: Pattern, node: Node, value: Value, m: Match, root: bool) -> bool:
    if not root and not pat.shared and (len(value.uses) != 1 or len(node.outputs) != 1):
        return False
    if any(node.attrs.get(k) != v for k, v in pat.attrs):
        return False
    if pat.where is not None and not pat.where(node):
        return False
    inputs = list(node.inputs)
    if len(inputs) > len(pat.operands):
        return False
    inputs += [None] * (len(pat.operands) - len(inputs))
    m.nodes.append(node)
    orders = [inputs, inputs[::-1]] if pat.commute and len(inputs) == 2 else [inputs]
    for order in orders:
        saved, count = dict(m), len(m.nodes)
        if all(_match(p, v, m, False) for p, v in zip(pat.operands, order)):
            return True
        m.clear()
        m.update(saved)
        del m.nodes[count:]
    return False


def match(pat: Pattern, value: Value) -> Match | None:
    """Match `pat` rooted at the producer of `value`; the Match, or None."""
    m = Match()
    graph_outputs = value.producer.graph.outputs if value.producer and value.producer.graph else []
    if not _match(pat, value, m, True):
        return None
    # Interior nodes that are graph outputs must survive the rewrite, so they cannot be fused away.
    if any(o is v for n in m.nodes[1:] for o in n.outputs for v in graph_outputs):
        return None
    return m


class Builder:
    """Creates replacement nodes right before the matched root node."""

    def __init__(self, graph: Graph, root: Node):
        self.graph, self.root = graph, root
        self.created: list[Node] = []

    def emit(self, op: str, *inputs: Value | None, **attrs: Any) -> Value:
        node = self.graph.add_node(op, list(inputs), attrs, name=self.root.name, before=self.root)
        self.created.append(node)
        return node.output

    def discard(self) -> None:
        """Remove what this builder made, for a rewrite that is declined after building."""
        for node in reversed(self.created):
            if node.graph is self.graph and not any(o.uses for o in node.outputs):
                self.graph.remove_node(node)

    def const(self, array: Any, like: Value | None = None, name: str | None = None) -> Value:
        arr = np.asarray(array)
        if like is not None and like.is_const:
            arr = arr.astype(like.const.dtype)
        return self.graph.add_constant(arr, name or f"{self.root.name}.c")


@dataclass
class Rule:
    pattern: Pattern
    build: Callable[[Match, Builder], Value | None]
    where: Callable[[Match], bool] | None = None
    name: str = field(default="")


def _remove_dead(graph: Graph, nodes: list[Node]) -> None:
    outputs = {id(v) for v in graph.outputs}
    for node in nodes:
        if node.graph is graph and not any(o.uses or id(o) in outputs for o in node.outputs):
            graph.remove_node(node)


def _inherit_names(graph: Graph, new: Value, old_name: str, node_name: str) -> None:
    """Give a freshly built replacement the replaced value's and node's names, so dumps stay readable."""
    node = new.producer
    if node is None or node.graph is not graph or len(node.outputs) != 1 or graph.has_value(old_name):
        return
    if not node.name.startswith(node_name):
        return
    graph.rename_value(new, old_name)
    if node.name != node_name and node_name not in graph._node_names:
        graph._node_names.discard(node.name)
        node.name = node_name
        graph._node_names.add(node_name)


def _same_type(new: Value, old: Value) -> bool:
    """A replacement must have the replaced value's shape and dtype (a rewrite never changes types)."""
    return new.shape == old.shape and new.dtype == old.dtype


def rewrite(graph: Graph, rules: Sequence[Rule], max_sweeps: int = 100) -> bool:
    """Apply `rules` to single-output nodes until none matches; returns whether anything changed."""
    changed = False
    for _ in range(max_sweeps):
        swept = False
        for node in list(graph.nodes):
            if node.graph is not graph or len(node.outputs) != 1:
                continue
            for rule in rules:
                m = match(rule.pattern, node.output)
                if m is None or (rule.where is not None and not rule.where(m)):
                    continue
                builder = Builder(graph, node)
                new = rule.build(m, builder)
                if new is None or new is node.output or not _same_type(new, node.output):
                    builder.discard()
                    continue
                if not graph.can_replace(node.output, new):
                    builder.discard()
                    continue
                old_name, node_name = node.output.name, node.name
                graph.replace_all_uses(node.output, new)
                _remove_dead(graph, m.nodes)
                _inherit_names(graph, new, old_name, node_name)
                swept = changed = True
                break
        if not swept:
            break
    if changed:
        graph.drop_unused_constants()
    return changed
