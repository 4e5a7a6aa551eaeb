"""Ember's index, scan, bitwise, trigonometric and recurrent ops export back to ONNX that onnxruntime runs to the
interpreter's result, exactly (integers) or to float32 rounding."""

from __future__ import annotations

import numpy as np
import onnx

from ember.backends.onnx_export import export_onnx
from ember.ir.interpreter import interpret
from ember.ir.parser import parse_graph
from tests.conftest import ort_run

GRAPH = """graph @g(%x: f32[4,3], %i: i64[2,1], %u: f32[2,3], %j: i64[4,3], %n: u32[4,3], %s: u32[4,3]) -> (
    %sn, %gn, %se, %ge, %tv, %ti, %cs, %oh, %es, %fm, %ls, %rs, %bx, %nan, %trig) {
  %sn = scatter_nd(%x, %i, %u) {reduction="add"} : f32[4,3]
  %gn = gather_nd(%x, %i) : f32[2,3]
  %se = scatter_elements(%x, %j, %x) {axis=1, reduction="max"} : f32[4,3]
  %ge = gather_elements(%x, %j) {axis=1} : f32[4,3]
  %tv, %ti = topk(%x) {k=2, axis=0, largest=0} : f32[2,3], i64[2,3]
  %cs = cumsum(%x) {axis=1, exclusive=1, reverse=1} : f32[4,3]
  %oh = one_hot(%j) {depth=3, axis=1, on=2.0, off=-1.0, dtype=f32} : f32[4,3,3]
  %es = einsum(%x, %u) {equation="ij,kj->ik"} : f32[4,2]
  %fm = floor_mod(%n, %s) : u32[4,3]
  %ls = left_shift(%n, %s) : u32[4,3]
  %rs = right_shift(%n, %s) : u32[4,3]
  %bx = bitwise_xor(%n, %s) : u32[4,3]
  %nan = isnan(%x) : bool[4,3]
  %t = atan(%x) : f32[4,3]
  %trig = cosh(%t) : f32[4,3]
  return %sn, %gn, %se, %ge, %tv, %ti, %cs, %oh, %es, %fm, %ls, %rs, %bx, %nan, %trig
}"""


def test_new_ops_export_to_onnx_that_onnxruntime_runs_the_same():
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((4, 3)).astype(np.float32),
        "i": np.array([[1], [-1]], np.int64),
        "u": rng.standard_normal((2, 3)).astype(np.float32),
        "j": rng.integers(-3, 3, (4, 3)).astype(np.int64),
        "n": rng.integers(0, 1000, (4, 3)).astype(np.uint32),  # onnxruntime's BitShift takes unsigned ints
        "s": rng.integers(1, 5, (4, 3)).astype(np.uint32),
    }
    graph = parse_graph(GRAPH)
    want = interpret(graph, feeds)
    got = ort_run(export_onnx(graph), feeds)
    assert len(got) == len(want)
    for (name, w), g in zip(want.items(), got):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=name)


def test_lstm_and_gru_export_as_their_steps_that_onnxruntime_runs_the_same():
    graph = parse_graph(
        """graph @g(%xw: f32[5,2,12], %r: f32[3,12], %h: f32[2,3], %gx: f32[4,2,9], %gr: f32[3,9], %gb: f32[9]) -> (
            %y, %g0, %g1) {
          %y = lstm(%xw, %r, %h) {reverse=1} : f32[5,2,3]
          %g0 = gru(%gx, %gr, %gb, %h) {linear_before_reset=0} : f32[4,2,3]
          %g1 = gru(%gx, %gr) {linear_before_reset=1, reverse=1} : f32[4,2,3]
          return %y, %g0, %g1
        }"""
    )
    rng = np.random.default_rng(1)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in graph.inputs}
    got = ort_run(export_onnx(graph), feeds)
    for g, w in zip(got, interpret(graph, feeds).values()):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_many_composite_nodes_export_to_a_valid_model():
    """The exporter cached tensors by id(): a finished composite's temporaries were freed and a later one's
    reused their ids, so two nodes wrote one name (8 gru nodes: 'y3__slice2' twice)."""
    ops = "\n".join(f"%y{i} = gru(%x, %r) {{reverse={i % 2}}} : f32[4,2,3]" for i in range(8))
    outs = ", ".join(f"%y{i}" for i in range(8))
    graph = parse_graph(f"graph @g(%x: f32[4,2,9], %r: f32[3,9]) -> ({outs}) {{\n{ops}\nreturn {outs}\n}}")
    onnx.checker.check_model(export_onnx(graph), full_check=True)
