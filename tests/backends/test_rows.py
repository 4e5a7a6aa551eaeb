"""Row-wise kernels (layer norm, softmax over the last axis): one parallel loop over rows, each row's sums
and maxima as vectorized lane-wise partials; values match onnxruntime (conftest's assert_close)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import helper

import ember
from ember.backends.tvm import schedules
from ember.backends.tvm.targets import resolve
from tests.backends.test_schedules import kernel_named, scheduled_kernels
from tests.conftest import assert_close, make_model, ort_run, random_feeds


def layer_norm_model(width: int):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)]
    inits = {"g": rng.standard_normal(width).astype(np.float32), "b": rng.standard_normal(width).astype(np.float32)}
    return make_model(nodes, [("x", [2, 64, width])], [("y", None)], inits)


def softmax_model(width: int):
    return make_model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [("x", [2, 64, width])], [("y", None)])


def test_layer_norm_is_one_parallel_loop_with_vectorized_partial_sums():
    text = kernel_named(scheduled_kernels(layer_norm_model(768)), "layer_norm")
    lanes = schedules.vector_bits(resolve("host").target) // 32
    assert text.count("T.parallel(") == 1
    for stage in ("_sum_rf_update", "_var_sum_rf_update"):
        assert re.search(rf"T\.vectorized\(T\.int64\({lanes}\)\)[^\n]*\n[^\n]*{stage}", text), stage


@pytest.mark.parametrize("build", [layer_norm_model, softmax_model])
@pytest.mark.parametrize("width", [768, 100])  # 100: no whole vectors of lanes, the sums stay scalar
def test_row_kernels_match_onnxruntime(build, width):
    model = build(width)
    feeds = random_feeds(model)
    got = ember.compile(model, "host").run(feeds)
    assert_close(list(got.values()), ort_run(model, feeds))
