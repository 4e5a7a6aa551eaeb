"""Pass registry and PassManager: named graph-to-graph passes run in a pipeline, instrumented."""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ember.errors import EmberError
from ember.ir.graph import Graph
from ember.ir.verifier import verify

PassFn = Callable[[Graph], bool]


@dataclass(frozen=True)
class PassInfo:
    name: str
    description: str
    fn: PassFn


_PASSES: dict[str, PassInfo] = {}

OPT_LEVELS: dict[int, tuple[str, ...]] = {
    0: (),
    1: ("dce", "fold-constants"),
    2: ("dce", "fold-constants"),
    3: ("dce", "fold-constants"),
}


def register(name: str, description: str) -> Callable[[PassFn], PassFn]:
    """Register `fn(graph) -> bool` (mutates the graph, returns whether it changed) under `name`."""

    def wrap(fn: PassFn) -> PassFn:
        if name in _PASSES and _PASSES[name].fn is not fn:
            raise EmberError(f"pass '{name}' is registered twice")
        _PASSES[name] = PassInfo(name, description, fn)
        return fn

    return wrap


def get_pass(name: str) -> PassInfo:
    try:
        return _PASSES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_PASSES), n=3, cutoff=0.5)
        raise EmberError(
            f"unknown pass '{name}'",
            hint=f"did you mean {', '.join(close)}?" if close else "run 'ember passes' for the list",
        ) from None


def all_passes() -> list[PassInfo]:
    return sorted(_PASSES.values(), key=lambda p: p.name)


def parse_pipeline(spec: str | Sequence[str] | int) -> list[str]:
    """A pipeline from 'a,b,c', a list of names, or an opt level (0-3 or '-O2')."""
    if isinstance(spec, int):
        if spec not in OPT_LEVELS:
            raise EmberError(f"unknown opt level {spec}", hint="use 0, 1, 2 or 3")
        return list(OPT_LEVELS[spec])
    if isinstance(spec, str):
        s = spec.strip()
        if s.startswith("-O") and s[2:].isdigit():
            return parse_pipeline(int(s[2:]))
        names = [p.strip() for p in s.split(",") if p.strip()]
    else:
        names = list(spec)
    for n in names:
        get_pass(n)
    return names


@dataclass
class PassRecord:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    changed: bool


@dataclass
class PassManager:
    """Runs passes in order; `verify_each` checks invariants after every pass."""

    pipeline: list[str]
    verify_each: bool = False
    records: list[PassRecord] = field(default_factory=list)

    @classmethod
    def from_spec(cls, spec: str | Sequence[str] | int, verify_each: bool = False) -> PassManager:
        return cls(parse_pipeline(spec), verify_each)

    def run(self, graph: Graph) -> bool:
        changed_any = False
        for name in self.pipeline:
            info = get_pass(name)
            before = len(graph.nodes)
            start = time.perf_counter()
            try:
                changed = bool(info.fn(graph))
            except EmberError as e:
                raise EmberError(f"pass '{name}' failed: {e.message}", node=e.node, op=e.op, hint=e.hint) from None
            seconds = time.perf_counter() - start
            if self.verify_each:
                try:
                    verify(graph)
                except EmberError as e:
                    raise EmberError(f"after pass '{name}': {e.message}", node=e.node, op=e.op) from None
            self.records.append(PassRecord(name, seconds, before, len(graph.nodes), changed))
            changed_any |= changed
        return changed_any
