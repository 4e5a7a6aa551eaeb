"""Pass registry and PassManager: named graph passes run in a pipeline, with instruments hooked in."""

from __future__ import annotations

import contextlib
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
    origin: str = "ember"  # "ember", a plugin file, or an entry point


_PASSES: dict[str, PassInfo] = {}
_ORIGIN = {"current": "ember"}

_O2 = (
    "canonicalize",
    "fold-constants",
    "fuse-conv-bn",
    "matmul-to-dense",
    "fold-scale",
    "fuse-bias-add",
    "expand-volumes",
    "conv-transpose-to-conv",
    "recognize-activations",
    "fuse-layer-norm",
    "fuse-attention",
    "canonicalize",
    "fuse-activation",
)
OPT_LEVELS: dict[int, tuple[str, ...]] = {
    0: (),
    1: ("canonicalize", "fold-constants"),
    2: _O2,
    3: _O2,
}


def register(name: str, description: str) -> Callable:
    """Register a pass under a kebab-case `name`: a function `fn(graph) -> bool` (mutates the graph,
    returns whether it changed) or a class whose instances are such callables."""

    def wrap(obj):
        fn = obj() if isinstance(obj, type) else obj
        if name in _PASSES and _PASSES[name].fn.__qualname__ != getattr(fn, "__qualname__", None):
            raise EmberError(f"pass '{name}' is already registered by {_PASSES[name].origin}")
        _PASSES[name] = PassInfo(name, description, fn, _ORIGIN["current"])
        return obj

    return wrap


def get_pass(name: str) -> PassInfo:
    from ember.passes.plugins import load_entry_points

    load_entry_points()
    try:
        return _PASSES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_PASSES), n=3, cutoff=0.5)
        raise EmberError(
            f"unknown pass '{name}'",
            hint=f"did you mean {', '.join(close)}?" if close else "run 'ember passes' for the list",
        ) from None


def all_passes() -> list[PassInfo]:
    from ember.passes.plugins import load_entry_points

    load_entry_points()
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


class Instrument:
    """Hooks around each pass; subclasses print, dump or time."""

    def before_pass(self, index: int, name: str, graph: Graph) -> None:
        pass

    def after_pass(self, index: int, name: str, graph: Graph, changed: bool) -> None:
        pass


@dataclass
class PassManager:
    """Runs passes in order; `verify_each` checks the IR's invariants after every pass."""

    pipeline: list[str]
    verify_each: bool = False
    instruments: list[Instrument] = field(default_factory=list)
    records: list[PassRecord] = field(default_factory=list)

    @classmethod
    def from_spec(
        cls, spec: str | Sequence[str] | int, verify_each: bool = False, instruments: Sequence[Instrument] = ()
    ) -> PassManager:
        return cls(parse_pipeline(spec), verify_each, list(instruments))

    def run(self, graph: Graph) -> bool:
        changed_any = False
        for index, name in enumerate(self.pipeline, start=1):
            info = get_pass(name)
            for inst in self.instruments:
                inst.before_pass(index, name, graph)
            before = len(graph.nodes)
            start = time.perf_counter()
            changed = self._run_one(info, graph)
            seconds = time.perf_counter() - start
            if self.verify_each:
                try:
                    verify(graph)
                except EmberError as e:
                    raise EmberError(f"after pass '{name}': {e.message}", node=e.node, op=e.op) from None
            self.records.append(PassRecord(name, seconds, before, len(graph.nodes), changed))
            for inst in self.instruments:
                inst.after_pass(index, name, graph, changed)
            changed_any |= changed
        return changed_any

    @staticmethod
    def _run_one(info: PassInfo, graph: Graph) -> bool:
        from ember.passes.plugins import pass_time_limit  # plugins imports this module

        where = None if info.origin == "ember" else info.origin
        with contextlib.nullcontext() if where is None else pass_time_limit(info.name, where):
            try:
                return bool(info.fn(graph))
            except EmberError as e:
                raise EmberError(
                    f"pass '{info.name}' failed: {e.message}", file=e.file or where, node=e.node, op=e.op, hint=e.hint
                ) from None
            except RecursionError:
                raise EmberError(f"pass '{info.name}' exceeded the recursion limit", file=where) from None
            except Exception as e:  # a plugin's bug must not surface as a traceback
                if info.origin == "ember":
                    raise
                raise EmberError(f"pass '{info.name}' raised {type(e).__name__}: {str(e)[:200]}", file=where) from None
