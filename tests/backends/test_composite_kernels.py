"""Composite fusions end to end: exporter-style subgraphs become one Ember op each under -O2, the TVM
build turns each into exactly one kernel, and the result still matches onnxruntime."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

import ember
from ember.backends.tvm.build import count_kernels
from tests.conftest import assert_close, make_model, ort_run, random_feeds

H = helper.make_node
rng = np.random.default_rng(7)


def f32(*shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def s(value):
    return np.float32(value)


def conv_hardswish():
    nodes = [
        H("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        H("Add", ["c", "three"], ["c3"]),
        H("Clip", ["c3", "zero", "six"], ["r6"]),
        H("Mul", ["c", "r6"], ["m"]),
        H("Div", ["m", "six"], ["y"]),
    ]
    inits = {"w": f32(8, 4, 3, 3), "b": f32(8), "three": s(3), "zero": s(0), "six": s(6)}
    return make_model(nodes, [("x", [1, 4, 10, 10])], [("y", None)], inits, opset=13)


def conv_residual_relu():
    nodes = [
        H("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        H("Add", ["x", "c"], ["r"]),
        H("Relu", ["r"], ["y"]),
    ]
    return make_model(nodes, [("x", [1, 8, 6, 6])], [("y", None)], {"w": f32(8, 8, 3, 3), "b": f32(8)}, opset=13)


def conv_silu():
    nodes = [H("Conv", ["x", "w"], ["c"]), H("Sigmoid", ["c"], ["g"]), H("Mul", ["g", "c"], ["y"])]
    return make_model(nodes, [("x", [1, 4, 6, 6])], [("y", None)], {"w": f32(6, 4, 1, 1)}, opset=13)


def matmul_gelu():
    nodes = [
        H("MatMul", ["x", "w"], ["mm"]),
        H("Add", ["mm", "b"], ["h"]),
        H("Div", ["h", "sqrt2"], ["hs"]),
        H("Erf", ["hs"], ["e"]),
        H("Add", ["one", "e"], ["e1"]),
        H("Mul", ["h", "half"], ["hh"]),
        H("Mul", ["hh", "e1"], ["y"]),
    ]
    inits = {"w": f32(16, 32), "b": f32(32), "sqrt2": s(math.sqrt(2)), "one": s(1), "half": s(0.5)}
    return make_model(nodes, [("x", [2, 5, 16])], [("y", None)], inits, opset=13)


def layer_norm():
    nodes = [
        H("ReduceMean", ["x"], ["mu"], axes=[-1]),
        H("Sub", ["x", "mu"], ["d"]),
        H("Pow", ["d", "two"], ["sq"]),
        H("ReduceMean", ["sq"], ["var"], axes=[-1]),
        H("Add", ["var", "eps"], ["ve"]),
        H("Sqrt", ["ve"], ["std"]),
        H("Div", ["d", "std"], ["n"]),
        H("Mul", ["n", "g"], ["ng"]),
        H("Add", ["ng", "beta"], ["y"]),
    ]
    inits = {"two": s(2), "eps": s(1e-5), "g": f32(24) + 1, "beta": f32(24)}
    return make_model(nodes, [("x", [2, 7, 24])], [("y", None)], inits, opset=13)


def sdpa_torch():
    """torch's exporter: q and k^T each scaled by sqrt(scale), an additive mask, softmax, then @ v."""
    root = s(1 / math.sqrt(math.sqrt(16)))
    nodes = [
        H("Mul", ["q", "root"], ["qs"]),
        H("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        H("Mul", ["kt", "root"], ["kts"]),
        H("MatMul", ["qs", "kts"], ["scores"]),
        H("Add", ["scores", "mask"], ["masked"]),
        H("Softmax", ["masked"], ["p"], axis=-1),
        H("MatMul", ["p", "v"], ["y"]),
    ]
    mask = np.where(np.tril(np.ones((8, 8), bool)), 0.0, -1e4).astype(np.float32)
    shape = [1, 2, 8, 16]
    return make_model(
        nodes, [("q", shape), ("k", shape), ("v", shape)], [("y", None)], {"root": root, "mask": mask}, opset=13
    )


CASES = {
    "conv_hardswish": (conv_hardswish, {"fused_conv2d": 1}),
    "conv_residual_relu": (conv_residual_relu, {"fused_conv2d": 1}),
    "conv_silu": (conv_silu, {"fused_conv2d": 1}),
    "matmul_gelu": (matmul_gelu, {"fused_dense": 1}),
    "layer_norm": (layer_norm, {"layer_norm": 1}),
    "sdpa_torch": (sdpa_torch, {"attention": 1}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_composite_is_one_kernel(name):
    build, ops = CASES[name]
    model = build()
    art = ember.compile(model, "host", layout="NCHW")  # NHWC would add the input's and output's transposes
    assert art.graph.op_counts() == ops
    assert count_kernels(art.executable) == 1
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


def test_composites_export_back_to_onnx():
    """A graph full of composites exports to plain ONNX that onnxruntime runs to the same result."""
    from ember.backends.onnx_export import export_onnx
    from ember.frontends.onnx import load
    from ember.models.blocks import transformer_block
    from ember.passes import PassManager

    model = transformer_block()
    graph = load(model)
    PassManager.from_spec(2).run(graph)
    assert {"attention", "fused_dense", "layer_norm"} <= set(graph.op_counts())
    feeds = random_feeds(model)
    assert_close(ort_run(export_onnx(graph), feeds), ort_run(model, feeds))
