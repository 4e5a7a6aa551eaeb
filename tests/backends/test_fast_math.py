"""The vector forms of exp, log, tanh, sigmoid and erf (ember.backends.tvm.fast_math): accuracy over float32's
whole range against float64 numpy, IEEE's special values, and that host builds use them."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper
from scipy import special
from tvm import te

import ember
from ember.backends.tvm import fast_math
from ember.ir.parser import parse_graph
from tests.backends.test_schedules import kernel_texts
from tests.conftest import make_model, ort_run

SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 1.2e-38, 88.72, 88.73, -87.3, -103.9, -104.0]
SAMPLES = np.concatenate(
    [np.linspace(-110, 110, 400_001), np.geomspace(1e-45, 3e38, 20_000), -np.geomspace(1e-45, 3e38, 20_000), SPECIALS]
).astype(np.float32)
REFERENCES = {
    "exp": np.exp,
    "log": np.log,
    "tanh": np.tanh,
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "erf": special.erf,
}
TINY = float(np.finfo(np.float32).tiny)
# largest error allowed relative to the float64 value, where that is a normal float: 2 to 4 units in the last place
TOLERANCE = {"exp": 2.4e-7, "log": 2.4e-7, "tanh": 4.8e-7, "sigmoid": 2.4e-7, "erf": 4.8e-7}


def _evaluate(name: str, x: np.ndarray) -> np.ndarray:
    xs = te.placeholder(x.shape, "float32")
    ys = te.compute(x.shape, lambda i: getattr(fast_math, name)(xs[i]))
    kernel = tvm.compile(te.create_prim_func([xs, ys]), "llvm")
    out = tvm.runtime.tensor(np.zeros_like(x))
    kernel(tvm.runtime.tensor(x), out)
    return out.numpy()


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_vector_form_is_accurate_over_the_float_range(name):
    got = _evaluate(name, SAMPLES)
    with np.errstate(all="ignore"):
        want64 = REFERENCES[name](SAMPLES.astype(np.float64))
    with np.errstate(over="ignore"):
        want = want64.astype(np.float32)  # float32's own rounding: inf past its largest finite value
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    got, want64 = got[finite], want64[finite]
    normal = np.abs(want64) >= TINY
    assert np.max(np.abs(got[normal] - want64[normal]) / np.abs(want64[normal])) <= TOLERANCE[name]
    assert np.max(np.abs(got[~normal] - want64[~normal]), initial=0) <= 2e-45  # subnormal: within one step


def test_exp_at_the_ends_of_its_range():
    x = np.array([88.72, 88.7228, 88.73, -87.3, -100.0, -104.0], np.float32)
    got = _evaluate("exp", x)
    assert np.isfinite(got[:2]).all() and got[1] > 3.4e38 and got[2] == np.inf
    assert 1.2e-38 < got[3] < 1.3e-38  # a normal result where exp(n ln 2)'s 2^n alone would underflow
    assert 0 < got[4] < 1e-43 and got[5] == 0  # subnormal, then rounded to zero


def test_log_of_subnormal_and_negative_inputs():
    x = np.array([1e-40, 1e-45, 0.0, -1.0, np.inf], np.float32)
    got = _evaluate("log", x)
    np.testing.assert_allclose(got[:2], np.log(x[:2].astype(np.float64)), rtol=1e-6)
    assert got[2] == -np.inf and np.isnan(got[3]) and got[4] == np.inf


def test_host_kernels_use_the_vector_forms_and_match_onnxruntime():
    """No exp, log, tanh, sigmoid or erf call is left for LLVM to scalarize into libm calls."""
    ops = ["Exp", "Log", "Tanh", "Sigmoid", "Erf", "Softmax"]
    nodes = [helper.make_node(op, ["x"], [f"y{i}"]) for i, op in enumerate(ops)]
    model = make_model(nodes, [("x", [4, 64])], [(f"y{i}", None) for i in range(len(ops))], {}, 13)
    art = ember.compile(model, "host")
    text = "\n".join(kernel_texts(art.graph).values())
    for call in ("T.exp(", "T.log(", "T.tanh(", "T.sigmoid(", "T.erf("):
        assert call not in text
    feeds = {"x": np.random.default_rng(0).uniform(0.01, 6, (4, 64)).astype(np.float32)}
    got = art.run(feeds)
    for i, want in enumerate(ort_run(model, feeds)):
        np.testing.assert_allclose(got[f"y{i}"], want, rtol=1e-6, atol=1e-7)


def test_specials_through_a_compiled_graph():
    x = np.array([-np.inf, -1e30, -0.0, 1e-40, np.nan, 1e30, np.inf], np.float32)
    graph = parse_graph(
        """graph @g(%x: f32[7]) -> (%e, %t, %s, %r) {
          %e = exp(%x) : f32[7]
          %t = tanh(%x) : f32[7]
          %s = sigmoid(%x) : f32[7]
          %r = erf(%x) : f32[7]
          return %e, %t, %s, %r
        }"""
    )
    got = ember.compile(graph, "host").run({"x": x})
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(got["e"], [0, 0, 1, 1, np.nan, np.inf, np.inf])
        np.testing.assert_array_equal(got["t"], [-1, -1, -0.0, x[3], np.nan, 1, 1])  # tanh(x) rounds to x
        np.testing.assert_array_equal(got["s"], [0, 0, 0.5, 0.5, np.nan, 1, 1])
        np.testing.assert_array_equal(got["r"], [-1, -1, -0.0, got["r"][3], np.nan, 1, 1])
    assert 0 < got["r"][3] < 2e-40  # erf(x) ~ 1.128 x, still subnormal
