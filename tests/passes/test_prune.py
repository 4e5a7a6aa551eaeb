"""Pruning patterns, skip lists, scope and bad input; sparse lowering checked against the pruned dense graph
by the interpreter (rtol 1e-4) on a transformer-FFN-shaped graph and an NHWC 1x1-conv CNN."""

from __future__ import annotations

import numpy as np
import pytest

from ember.errors import EmberError
from ember.ir.graph import Graph
from ember.ir.interpreter import interpret
from ember.ir.parser import parse_graph
from ember.ir.printer import print_graph
from ember.passes.prune import layer_weight
from ember.sparsity import apply_sparsity, format_report


def ffn_graph(batch: int = 4, d: int = 64, h: int = 256, seed: int = 0) -> Graph:
    """x -> fused_dense(d->h, relu) -> dense(h->d) + bias, weights [N, K]."""
    rng = np.random.default_rng(seed)
    g = Graph("ffn")
    x = g.add_input("x", [batch, d])
    w1 = g.add_constant(rng.standard_normal((h, d)).astype(np.float32), "w1")
    b1 = g.add_constant(rng.standard_normal(h).astype(np.float32), "b1")
    w2 = g.add_constant(rng.standard_normal((d, h)).astype(np.float32), "w2")
    b2 = g.add_constant(rng.standard_normal(d).astype(np.float32), "b2")
    y = g.emit("fused_dense", x, w1, b1, activation="relu", name="up")
    g.outputs.append(g.emit("dense", y, w2, b2, name="down"))
    return g


def cnn_graph(batch: int = 2, c: int = 32, wide: int = 64, hw: int = 5, seed: int = 0) -> Graph:
    """NHWC 1x1 convs c -> wide (relu) -> c with a residual, and a 3x3 conv that stays dense."""
    rng = np.random.default_rng(seed)
    g = Graph("cnn")
    x = g.add_input("x", [batch, hw, hw, c])
    conv = dict(strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1, layout="NHWC")
    w1 = g.add_constant(rng.standard_normal((1, 1, c, wide)).astype(np.float32), "w1")
    w2 = g.add_constant(rng.standard_normal((1, 1, wide, c)).astype(np.float32), "w2")
    w3 = g.add_constant(rng.standard_normal((3, 3, c, c)).astype(np.float32), "w3")
    y = g.emit(
        "fused_conv2d", x, w1, g.add_constant(np.ones(wide, np.float32), "b1"), activation="relu", **conv, name="a"
    )
    y = g.emit("fused_conv2d", y, w2, None, x, **conv, name="b")
    g.outputs.append(g.emit("conv2d", y, w3, **{**conv, "pads": (1, 1, 1, 1)}, name="c"))
    return g


def density(g: Graph, name: str) -> float:
    w = layer_weight(g.node(name))
    return np.count_nonzero(w) / w.size


@pytest.mark.parametrize("pattern", ["unstructured", "block:4x4", "block:1x4", "8x1"])
def test_patterns_reach_the_sparsity(pattern):
    g = ffn_graph()
    apply_sparsity(g, 0.9, pattern, lowering=False)
    for name in ("up", "down"):
        w = layer_weight(g.node(name))
        assert abs(np.count_nonzero(w) / w.size - 0.1) < 0.01
        if pattern != "unstructured":
            r, c = (int(v) for v in pattern.split(":")[-1].split("x"))
            tiles = w.reshape(w.shape[0] // r, r, w.shape[1] // c, c)
            kept = np.count_nonzero(tiles, axis=(1, 3))
            assert set(np.unique(kept)) <= {0, r * c}


def test_n_of_m_keeps_two_of_every_four_along_k():
    g = ffn_graph()
    report = apply_sparsity(g, None, "2:4", threshold=0.6)
    for row in report:
        assert row.format == "bsr" and row.density == 0.5
    assert [n.attrs["nm"] for n in g.nodes] == [(2, 4), (2, 4)]


def test_global_scope_cuts_all_layers_at_one_magnitude():
    g = ffn_graph()
    g.node("down").inputs[1].const[:] *= 10  # a layer of larger weights keeps more of them
    apply_sparsity(g, 0.8, scope="global", lowering=False)
    total = sum(np.count_nonzero(layer_weight(g.node(n))) for n in ("up", "down"))
    assert abs(total / (2 * 64 * 256) - 0.2) < 0.01
    assert density(g, "down") > 0.3 > 0.1 > density(g, "up")


def test_skip_list_and_already_pruned_layers_are_left_alone():
    g = ffn_graph()
    before = layer_weight(g.node("down")).copy()
    report = apply_sparsity(g, 0.9, skip=["do*"])
    assert np.array_equal(layer_weight(g.node("down")), before)
    rows = {r.layer: r for r in report}
    assert rows["down"].format == "dense" and "skipped" in rows["down"].note
    assert rows["up"].format == "bsr" and [n.op for n in g.nodes] == ["sparse_dense", "dense"]
    g2 = ffn_graph()
    apply_sparsity(g2, 0.95, lowering=False)
    pruned = layer_weight(g2.node("up")).copy()
    rows = {r.layer: r for r in apply_sparsity(g2, 0.9, lowering=False)}
    assert "already pruned" in rows["up"].note and np.array_equal(layer_weight(g2.node("up")), pruned)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sparsity": 0.0}, "outside (0, 1)"),
        ({"sparsity": 1.0}, "outside (0, 1)"),
        ({"sparsity": -0.5}, "outside (0, 1)"),
        ({"sparsity": 0.5, "pattern": "diagonal"}, "unknown sparsity pattern"),
        ({"sparsity": 0.5, "pattern": "block:0x4"}, "unknown sparsity pattern"),
        ({"pattern": "3:5"}, "M=5 to divide the reduction axis K=64"),
        ({"sparsity": 0.9, "pattern": "2:4"}, "fixes the sparsity at 0.5"),
        ({"sparsity": 0.5, "pattern": "block:3x3"}, "does not tile"),
        ({"sparsity": 0.5, "scope": "model"}, "unknown sparsity scope"),
        ({"sparsity": 0.5, "threshold": 1.5}, "outside (0, 1]"),
    ],
)
def test_bad_input_is_one_error(kwargs, message):
    with pytest.raises(EmberError, match=None) as e:
        apply_sparsity(ffn_graph(), **kwargs)
    assert message in str(e.value)


@pytest.mark.parametrize("pattern", ["unstructured", "block:4x4", "block:8x1", "2:4"])
@pytest.mark.parametrize("make", [ffn_graph, cnn_graph])
def test_sparse_graph_matches_pruned_dense(make, pattern):
    g = make()
    sparsity = None if pattern == "2:4" else 0.9
    apply_sparsity(g, sparsity, pattern, lowering=False)
    x = np.random.default_rng(1).standard_normal(g.inputs[0].shape).astype(np.float32)
    want = interpret(g, {"x": x})
    report = apply_sparsity(g, threshold=0.6)
    assert any(r.format == "bsr" for r in report) and "sparse_dense" in g.op_counts()
    got = interpret(g, {"x": x})
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4 * np.abs(want[name]).max())


def test_report_and_ir_text_round_trip():
    g = ffn_graph()
    report = apply_sparsity(g, 0.9, "block:4x4")
    up = next(r for r in report if r.layer == "up")
    assert (up.format, up.block, up.shape) == ("bsr", "4x4", (256, 64))
    assert up.bytes_dense == 256 * 64 * 4 and up.bytes_stored < 0.25 * up.bytes_dense
    lines = format_report(report)
    assert "4x4" in lines[1] and lines[-1].startswith("weights:")
    text = print_graph(g)
    again = parse_graph(text)
    assert print_graph(again) == text
    x = np.random.default_rng(2).standard_normal((4, 64)).astype(np.float32)
    out = g.outputs[0].name
    np.testing.assert_array_equal(interpret(again, {"x": x})[out], interpret(g, {"x": x})[out])
