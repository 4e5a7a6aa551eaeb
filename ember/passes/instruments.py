"""Instruments for the PassManager: print IR around passes, dump every stage to a directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from ember.atomic import write_atomic, write_text_atomic
from ember.errors import EmberError
from ember.ir.graph import Graph
from ember.ir.printer import INLINE_LIMIT, print_graph
from ember.passes.manager import Instrument


def _banner(when: str, name: str) -> str:
    return f"// ----- IR dump {when} {name} ----- //"


class PrintIR(Instrument):
    """--print-ir-before/--print-ir-after PASS, --print-ir-after-all, --print-ir-after-change."""

    def __init__(
        self, before=(), after=(), after_all: bool = False, after_change: bool = False, stream: TextIO | None = None
    ):
        self.before, self.after = set(before), set(after)
        self.after_all, self.after_change = after_all, after_change
        self.stream = stream

    def _emit(self, text: str) -> None:
        (self.stream or sys.stderr).write(text)

    def before_pass(self, index, name, graph) -> None:
        if name in self.before:
            self._emit(_banner("before", name) + "\n" + print_graph(graph, {}))

    def after_pass(self, index, name, graph, changed) -> None:
        if self.after_all or name in self.after or (self.after_change and changed):
            self._emit(_banner("after", name) + "\n" + print_graph(graph, {}))


class DumpIR(Instrument):
    """--dump-ir DIR: 00-input.ir, 01-after-<pass>.ir, ... with weights in .npz files beside them
    (a stage whose constants did not change reuses the previous stage's weights file)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EmberError(f"cannot create the IR dump folder '{directory}': {e.strerror or e}") from None
        self.count = 0
        self._last_weights: tuple[str, dict[str, np.ndarray]] | None = None

    def write(self, stem: str, graph: Graph) -> Path:
        large = {c.name: c.const for c in graph.constants if c.const.size > INLINE_LIMIT}
        weights_name = f"{stem}.npz"
        if self._last_weights is not None:
            prev_name, prev = self._last_weights
            if large.keys() == prev.keys() and all(large[k] is prev[k] for k in large):
                weights_name = prev_name
        sidecar: dict[str, np.ndarray] = {}
        text = print_graph(graph, sidecar, weights_name)
        files = {}
        if sidecar and (self._last_weights is None or weights_name != self._last_weights[0]):
            files[self.dir / weights_name] = lambda f: np.savez(f, **sidecar)
        path = self.dir / f"{stem}.ir"
        write_atomic(files | {path: lambda f: f.write(text.encode())})
        if files:
            self._last_weights = (weights_name, sidecar)
        return path

    def next_stem(self, label: str) -> str:
        stem = f"{self.count:02d}-{label}"
        self.count += 1
        return stem

    def before_pass(self, index, name, graph) -> None:
        if self.count == 0:
            self.write(self.next_stem("input"), graph)

    def after_pass(self, index, name, graph, changed) -> None:
        self.write(self.next_stem(f"after-{name}"), graph)

    def write_text(self, label: str, suffix: str, text: str) -> Path:
        path = self.dir / f"{self.next_stem(label)}{suffix}"
        write_text_atomic(path, text)
        return path
