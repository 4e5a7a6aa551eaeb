"""Lower dense layers and NHWC 1x1 convolutions whose weights are sparse enough to block-sparse sparse_dense.

The block size is the largest from BLOCKS that tiles the weight with at most 10% stored zeros; the layer
goes sparse when the stored fraction of the weight (blocks x R x C / N x K) is under the threshold. The
default is where the BSR kernels stopped beating Ember's dense ones in benchmarks/sparse.py (transformer
FFN, batch 1 and 16): about 0.35 for 1x1 blocks (unstructured weights), past 0.5 for vector blocks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ember.ir.graph import Graph, Node
from ember.ir.ops.sparse import bsr_from_dense, stored_bsr
from ember.passes.prune import layer_weight

DEFAULT_THRESHOLD = 0.35  # 1x1 blocks; the reported default
BLOCKED_THRESHOLD = 0.5  # blocks of 4 or more values run vectorized
BLOCKS = ((16, 1), (8, 1), (4, 4), (4, 1), (1, 4), (1, 1))
MIN_FILL = 0.9


@dataclass
class LayerSparsity:
    """One prunable layer in the sparsity report."""

    layer: str
    op: str
    shape: tuple[int, int]
    density: float
    format: str
    block: str
    bytes_dense: int
    bytes_stored: int
    note: str = ""

    def to_json(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}


def stored_blocks(w: np.ndarray, block: tuple[int, int]) -> int:
    r, c = block
    n, k = w.shape
    return int(np.count_nonzero(np.any(w.reshape(n // r, r, k // c, c) != 0, axis=(1, 3))))


def choose_block(w: np.ndarray) -> tuple[tuple[int, int], int]:
    """The largest block from BLOCKS that tiles `w` and keeps stored zeros under 1 - MIN_FILL, with its count."""
    nnz = max(np.count_nonzero(w), 1)
    n, k = w.shape
    for r, c in BLOCKS:
        if n % r == 0 and k % c == 0:
            count = stored_blocks(w, (r, c))
            if nnz >= MIN_FILL * count * r * c or (r, c) == (1, 1):
                return (r, c), count
    return (1, 1), nnz


def nm_of(w: np.ndarray) -> tuple[int, ...]:
    """(2, 4) when every 4 consecutive weights along K hold at most 2 non-zeros, else ()."""
    if w.shape[1] % 4:
        return ()
    return (2, 4) if np.count_nonzero(w.reshape(-1, 4), axis=1).max() <= 2 else ()


def _rewrite(graph: Graph, node: Node, w: np.ndarray, block: tuple[int, int], nm: tuple[int, ...]) -> int:
    """Replace `node` by sparse_dense over `w` in `block`s; returns the bytes the compiled kernel stores."""
    data, indices, indptr = bsr_from_dense(w, block)
    x, _, b, z = (node.inputs + [None] * 4)[:4]
    consts = [
        graph.add_constant(a, name=f"{node.inputs[1].name}.bsr_{part}")
        for a, part in ((data, "data"), (indices, "indices"), (indptr, "indptr"))
    ]
    attrs = {"nm": nm}
    if node.op.startswith("fused_"):
        attrs.update(activation=node.attrs["activation"], act_params=node.attrs["act_params"])
    new = graph.add_node("sparse_dense", [x, *consts, b, z], attrs, name=node.name, before=node)
    graph.replace_all_uses(node.output, new.output)
    graph.remove_node(node)
    lead = x.shape[:-1]
    rows = int(np.prod(lead)) if all(isinstance(d, int) for d in lead) else 1
    return sum(a.nbytes for a in stored_bsr(data, indices, indptr, w.shape[1], rows))


def lower_sparse(graph: Graph, threshold: float | None = None) -> list[LayerSparsity]:
    """Rewrite each layer whose stored weight fraction is under `threshold` (default: by block, see above)
    as sparse_dense; report all."""
    report = []
    for node in list(graph.nodes):
        w = layer_weight(node)
        if w is None:
            continue
        n, k = w.shape
        density = np.count_nonzero(w) / w.size
        (r, c), count = choose_block(w)
        stored = count * r * c / w.size
        limit = threshold if threshold is not None else DEFAULT_THRESHOLD if r * c == 1 else BLOCKED_THRESHOLD
        row = LayerSparsity(node.name, node.op, (n, k), density, "dense", "-", w.nbytes, w.nbytes)
        if node.op.endswith("conv2d") and node.attrs["layout"] != "NHWC":
            row.note = "NCHW 1x1 conv stays dense (sparse kernels run NHWC)"
        elif stored >= limit:
            row.note = f"stored fraction {stored:.2f} >= threshold {limit}"
        else:
            nm = nm_of(w)
            row.bytes_stored = _rewrite(graph, node, w, (r, c), nm)
            row.format, row.block = "bsr", f"{r}x{c}"
            row.note = "2:4 (N:M metadata)" if nm else ""
        report.append(row)
    graph.drop_unused_constants()
    return report
