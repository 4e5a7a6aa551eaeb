"""Magnitude pruning of layer weights to a target sparsity: unstructured, in R x C blocks, or N:M.

A layer's weight is viewed as W [N, K] (N outputs, K the reduction axis): dense and fused_dense weights
as they are, 1x1 convolutions' as [Cout, Cin]. Blocks are R outputs by C reduction columns; N:M keeps
the N largest of each M consecutive weights along K.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ember.errors import EmberError
from ember.ir.graph import Graph, Node

PATTERN_HELP = "use unstructured, block:RxC (block:1x4, block:4x4, block:8x1) or N:M (2:4)"


@dataclass(frozen=True)
class Pattern:
    """A pruning pattern: kind 'unstructured', 'block' (R x C) or 'nm' (N of every M)."""

    kind: str
    a: int = 1
    b: int = 1

    def __str__(self) -> str:
        return {"unstructured": "unstructured", "block": f"block:{self.a}x{self.b}"}.get(
            self.kind, f"{self.a}:{self.b}"
        )


def parse_pattern(text: str) -> Pattern:
    """'unstructured', 'block:RxC' (or 'RxC') or 'N:M' as a Pattern, else EmberError."""
    t = text.strip().lower()
    if t == "unstructured":
        return Pattern("unstructured")
    m = re.fullmatch(r"(?:block:)?(\d+)x(\d+)", t)
    if m and int(m[1]) > 0 and int(m[2]) > 0:
        return Pattern("block", int(m[1]), int(m[2]))
    m = re.fullmatch(r"(\d+):(\d+)", t)
    if m and 0 < int(m[1]) < int(m[2]):
        return Pattern("nm", int(m[1]), int(m[2]))
    raise EmberError(f"unknown sparsity pattern '{text}'", hint=PATTERN_HELP)


def check_sparsity(sparsity: float) -> None:
    if not 0.0 < sparsity < 1.0:
        raise EmberError(
            f"sparsity {sparsity} is outside (0, 1)", hint="give the fraction of weights to zero, e.g. 0.9"
        )


def layer_weight(node: Node) -> np.ndarray | None:
    """The constant weight of a layer sparse kernels can run, as W [N, K]; None for other nodes."""
    if node.op in ("dense", "fused_dense"):
        w = node.inputs[1]
        return w.const if w.is_const else None
    if node.op in ("conv2d", "fused_conv2d"):
        a, w = node.attrs, node.inputs[1]
        if not w.is_const or a["group"] != 1 or any(s != 1 for s in a["strides"]) or any(a["pads"]):
            return None
        if a["layout"] == "NHWC" and w.shape[:2] == (1, 1):
            return w.const[0, 0].T
        if a["layout"] == "NCHW" and w.shape[2:] == (1, 1):
            return w.const[:, :, 0, 0]
    return None


def set_layer_weight(graph: Graph, node: Node, w: np.ndarray) -> None:
    """Replace the layer's weight constant by `w` [N, K], in the layer's own weight layout."""
    old = node.inputs[1]
    if node.op in ("conv2d", "fused_conv2d"):
        w = w.T[None, None] if node.attrs["layout"] == "NHWC" else w[:, :, None, None]
    graph.set_input(node, 1, graph.add_constant(np.ascontiguousarray(w.astype(old.const.dtype)), name=old.name))


def scores(w: np.ndarray, pattern: Pattern, name: str) -> np.ndarray:
    """Per-element importance of `w` [N, K] under the pattern (blocks share their mean magnitude)."""
    n, k = w.shape
    mag = np.abs(w.astype(np.float64))
    if pattern.kind == "unstructured":
        return mag
    r, c = pattern.a, pattern.b
    if pattern.kind == "nm":
        if k % c:
            raise EmberError(f"{r}:{c} sparsity needs M={c} to divide the reduction axis K={k} of layer '{name}'")
        return mag
    if n % r or k % c:
        raise EmberError(f"block {r}x{c} does not tile the weight [{n}, {k}] of layer '{name}'", hint=PATTERN_HELP)
    blocks = mag.reshape(n // r, r, k // c, c).mean(axis=(1, 3))
    return np.kron(blocks, np.ones((r, c)))


def keep_mask(w: np.ndarray, score: np.ndarray, pattern: Pattern, cut: float | None, sparsity: float) -> np.ndarray:
    """Which weights stay: N:M per group, otherwise above the cut (the layer's own quantile when None)."""
    if pattern.kind == "nm":
        groups = score.reshape(-1, pattern.b)
        order = np.argsort(-groups, axis=1, kind="stable")[:, : pattern.a]
        keep = np.zeros_like(groups, dtype=bool)
        np.put_along_axis(keep, order, True, axis=1)
        return keep.reshape(w.shape)
    if cut is None:
        drop = int(round(sparsity * score.size))
        cut = np.sort(score, axis=None)[drop - 1] if drop else -np.inf
    return score > cut


def prune(
    graph: Graph, sparsity: float, pattern: Pattern, scope: str = "layer", skip: Sequence[str] = ()
) -> dict[str, str]:
    """Zero the smallest weights of each prunable layer (one cut for all with scope 'global'); returns the
    layers it left alone and why. Layers at or beyond the target sparsity already count as pruned."""
    check_sparsity(sparsity)
    if scope not in ("layer", "global"):
        raise EmberError(f"unknown sparsity scope '{scope}'", hint="use layer or global")
    left: dict[str, str] = {}
    todo: list[tuple[Node, np.ndarray, np.ndarray]] = []
    for node in graph.nodes:
        w = layer_weight(node)
        if w is None:
            continue
        if any(fnmatch.fnmatchcase(node.name, p) or fnmatch.fnmatchcase(node.inputs[1].name, p) for p in skip):
            left[node.name] = "skipped"
        elif pattern.kind != "nm" and np.count_nonzero(w) <= (1 - sparsity) * w.size + 0.5:
            left[node.name] = "already pruned"
        else:
            todo.append((node, w, scores(w, pattern, node.name)))
    cut = None
    if scope == "global" and todo and pattern.kind != "nm":
        every = np.concatenate([s.reshape(-1) for _, _, s in todo])
        drop = int(round(sparsity * every.size))
        cut = np.sort(every)[drop - 1] if drop else -np.inf
    for node, w, s in todo:
        set_layer_weight(graph, node, np.where(keep_mask(w, s, pattern, cut, sparsity), w, 0))
    graph.drop_unused_constants()
    return left
