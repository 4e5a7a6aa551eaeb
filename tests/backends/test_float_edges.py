"""Infinities, empty tensors, scalars and signed remainders through a host build, each against numpy: the
cases TVM's own lowerings get wrong (a max over -inf gave -3.4e38, a one-sided clip turned -inf finite)."""

from __future__ import annotations

import numpy as np

import ember
from ember.backends.onnx_export import export_onnx
from ember.ir.interpreter import interpret
from ember.ir.parser import parse_graph
from tests.conftest import ort_run

INF = np.inf


def _build_and_run(text: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    graph = parse_graph(text)
    built = ember.compile(graph, "host").run(feeds)
    for name, want in interpret(graph, feeds).items():
        np.testing.assert_array_equal(built[name], want)
    return built


def test_max_and_min_of_infinite_rows_stay_infinite():
    x = np.array([[0, -INF, 2], [-INF, -INF, -INF], [INF, INF, INF]], np.float32)
    got = _build_and_run(
        """graph @g(%x: f32[3,3]) -> (%hi, %lo, %pool) {
          @r = const dense<[1, 1, 3, 3]> : i64[4]
          %hi = reduce_max(%x) {axes=[1], keepdims=0} : f32[3]
          %lo = reduce_min(%x) {axes=[-1], keepdims=1} : f32[3,1]
          %x4 = reshape(%x, @r) {allowzero=0} : f32[1,1,3,3]
          %pool = global_max_pool(%x4) : f32[1,1,1,1]
          return %hi, %lo, %pool
        }""",
        {"x": x},
    )
    np.testing.assert_array_equal(got["hi"], [2, -INF, INF])
    np.testing.assert_array_equal(got["lo"], [[-INF], [-INF], [INF]])


def test_a_masked_row_is_recognized_after_its_max():
    """The ONNX Attention function's guard: a row whose bias is all -inf gets weights 0, not softmax's NaN."""
    bias = np.array([[0, -INF], [-INF, -INF]], np.float32)
    got = _build_and_run(
        """graph @g(%b: f32[2,2]) -> (%y) {
          @ninf = const dense<[-inf]> : f32[1]
          @zero = const dense<[0.0]> : f32[1]
          %mx = reduce_max(%b) {axes=[-1], keepdims=1} : f32[2,1]
          %all = equal(%mx, @ninf) : bool[2,1]
          %sm = softmax(%b) {axis=1} : f32[2,2]
          %y = where(%all, @zero, %sm) : f32[2,2]
          return %y
        }""",
        {"b": bias},
    )
    np.testing.assert_array_equal(got["y"], [[1, 0], [0, 0]])


def test_one_sided_clips_keep_infinities():
    x = np.array([-INF, -2, 1, INF], np.float32)
    got = _build_and_run(
        """graph @g(%x: f32[4]) -> (%below, %above, %none) {
          %below = clip(%x) {min=-inf, max=0.5} : f32[4]
          %above = clip(%x) {min=-1.0, max=inf} : f32[4]
          %none = clip(%x) {min=-inf, max=inf} : f32[4]
          return %below, %above, %none
        }""",
        {"x": x},
    )
    np.testing.assert_array_equal(got["below"], [-INF, -2, 0.5, 0.5])
    np.testing.assert_array_equal(got["above"], [-1, -1, 1, INF])


def test_scalar_inputs_and_empty_outputs():
    """A 0-d input stays 0-d on its way in (np.ascontiguousarray made it 1-d, and TVM refused it); an output
    with no elements is a constant, not a kernel looping zero times (which TVM cannot vectorize)."""
    got = _build_and_run(
        """graph @g(%x: f32[2,3], %s: f32[]) -> (%y, %empty) {
          @b = const dense<[1]> : i64[1]
          @a = const dense<[1]> : i64[1]
          %y = mul(%x, %s) : f32[2,3]
          %empty = slice(%x, @b, @b, @a) : f32[2,0]
          return %y, %empty
        }""",
        {"x": np.ones((2, 3), np.float32), "s": np.array(2.5, np.float32)},
    )
    assert got["empty"].shape == (2, 0) and float(got["y"][0, 0]) == 2.5


def test_remainders_follow_the_divisors_sign_or_the_dividends():
    """floor_mod is Python's % (ONNX Mod, fmod=0), mod is C's fmod; through a build and ONNX export both."""
    a = np.array([-7, 7, -7, 7, 0], np.int32)
    b = np.array([3, -3, -3, 3, 5], np.int32)
    text = """graph @g(%a: i32[5], %b: i32[5]) -> (%floor, %trunc) {
      %floor = floor_mod(%a, %b) : i32[5]
      %trunc = mod(%a, %b) : i32[5]
      return %floor, %trunc
    }"""
    got = _build_and_run(text, {"a": a, "b": b})
    np.testing.assert_array_equal(got["floor"], np.mod(a, b))
    np.testing.assert_array_equal(got["trunc"], np.fmod(a, b))
    exported = ort_run(export_onnx(parse_graph(text)), {"a": a, "b": b})
    np.testing.assert_array_equal(exported[0], np.mod(a, b))
    np.testing.assert_array_equal(exported[1], np.fmod(a, b))
